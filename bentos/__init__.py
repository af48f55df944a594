"""BentoML bundles that host servekit."""
