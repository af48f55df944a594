"""The Triton engine kind: the backend, its install check, the OpenAI translation and the model repository."""
