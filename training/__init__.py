"""LoRA fine-tuning that publishes versions to the model registry (issue #4). Never imports `serving`."""
