"""Request statistics (plain data) and their Prometheus export, kept apart as in vLLM."""
