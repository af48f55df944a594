"""servekit serving: the OpenAI-compatible gateway, its engines (backends) and its model registry."""

__version__ = "0.1.0"
