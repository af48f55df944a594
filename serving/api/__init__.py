"""The HTTP surface: OpenAI routes, operational routes, error rendering, request ids."""
