"""The Triton model repository servekit generates for one registry version.

Layout: `<repo>/<model_name>/config.pbtxt` and `<repo>/<model_name>/1/model.py` (the Python-backend model shipped
in `serving/backends/triton/python_model/`). The tensor names follow Triton's own vLLM backend (`text_input`, `stream`,
`sampling_parameters`, `text_output`), so a client written for one reads naturally against the other.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from serving.hardware import cpu_dtype
from serving.settings import TritonSettings

MODEL_TEMPLATE = Path(__file__).parent / "python_model" / "model.py"
MODEL_VERSION = "1"


def triton_model_name(served_name: str) -> str:
    """Triton names a model after its folder: keep it to characters that are safe in paths and URLs."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", served_name)


def config_pbtxt(model_name: str, settings: TritonSettings, model_path: Path) -> str:
    """Decoupled (one request, many responses: token streaming), batched by Triton's dynamic batcher."""
    batching = ""
    if settings.max_batch_size > 1:
        preferred = ""
        if settings.preferred_batch_sizes:
            preferred = f" preferred_batch_size: [ {', '.join(map(str, settings.preferred_batch_sizes))} ]"
        batching = f"dynamic_batching {{ max_queue_delay_microseconds: {settings.max_queue_delay_us}{preferred} }}\n"
    parameters = {
        "model_path": str(model_path),
        "max_model_len": str(settings.max_model_len),
        "dtype": cpu_dtype(settings.dtype),  # resolved here: the model runs in Triton's venv, without servekit
    }
    parameter_lines = ",\n".join(
        f"  {{ key: {json.dumps(key)} value: {{ string_value: {json.dumps(value)} }} }}"
        for key, value in parameters.items()
    )
    return (
        f'name: "{model_name}"\n'
        'backend: "python"\n'
        f"max_batch_size: {settings.max_batch_size}\n"
        "model_transaction_policy { decoupled: true }\n"
        "input [\n"
        '  { name: "text_input" data_type: TYPE_STRING dims: [ 1 ] },\n'
        '  { name: "stream" data_type: TYPE_BOOL dims: [ 1 ] optional: true },\n'
        '  { name: "sampling_parameters" data_type: TYPE_STRING dims: [ 1 ] optional: true }\n'
        "]\n"
        "output [\n"
        '  { name: "text_output" data_type: TYPE_STRING dims: [ 1 ] },\n'
        '  { name: "finish_reason" data_type: TYPE_STRING dims: [ 1 ] },\n'
        '  { name: "num_output_tokens" data_type: TYPE_INT32 dims: [ 1 ] }\n'
        "]\n"
        f"{batching}"
        f"instance_group [ {{ kind: KIND_CPU count: {settings.instance_count} }} ]\n"
        f"parameters [\n{parameter_lines}\n]\n"
    )


def write_repository(repository_dir: Path, model_name: str, settings: TritonSettings, model_path: Path) -> Path:
    """(Re)write the repository from settings: a restart always serves the current configuration."""
    model_dir = repository_dir / model_name
    if model_dir.exists():
        shutil.rmtree(model_dir)
    (model_dir / MODEL_VERSION).mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(config_pbtxt(model_name, settings, model_path))
    shutil.copyfile(MODEL_TEMPLATE, model_dir / MODEL_VERSION / "model.py")
    return model_dir
