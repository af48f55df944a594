"""LoRA fine-tuning that publishes versions to the model registry (issue #4). Never imports `serving`:
it reads a local base-model directory and writes a self-contained output directory (PEFT adapter,
manifest.json, eval.json, loss.png) that the composition root (`servekit train`) registers."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("servekit")
except PackageNotFoundError:  # a plain checkout without an install still reports a version
    __version__ = "0.0.0+local"
