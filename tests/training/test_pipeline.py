"""The shared tiny run: training, adapter files, evaluation report and manifest."""

from __future__ import annotations

import json

from peft import PeftModel
from transformers import AutoModelForCausalLM

from training.evaluate import EVAL_FILE, LOSS_PLOT
from training.publish import MANIFEST_FILE


def test_loss_decreases(trained):
    assert trained["training"]["loss_last"] < trained["training"]["loss_first"]


def test_trainable_params_for_r8_qkvo(trained):
    assert trained["training"]["trainable_params"] == 921_600


def test_adapter_loads_with_peft(trained, tiny_config, base_model):
    out = tiny_config.out
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_model.path), out)
    assert sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) == 921_600


def test_eval_report_and_plot(trained, tiny_config):
    report = json.loads((tiny_config.out / EVAL_FILE).read_text())
    for side in ("before", "after"):
        assert report[side]["perplexity"] > 1
        assert report[side]["samples"][0]["prompt"] == "What is the capital of France?"
    assert [step for step, _ in report["train_loss"]] == [1, 2, 3, 4]
    assert (tiny_config.out / LOSS_PLOT).read_bytes()[:4] == b"\x89PNG"


def test_manifest_fields(trained, tiny_config, base_model):
    manifest = json.loads((tiny_config.out / MANIFEST_FILE).read_text())
    assert manifest == trained
    for key in ("version", "base_model", "data_sha256", "config", "eval", "created_at", "servekit_version"):
        assert manifest[key], key
    assert manifest["base_model"] == base_model.tag
    assert manifest["tag"] == f"test-pirate:{manifest['version']}"
    assert manifest["eval"]["after"]["eval_loss"] < manifest["eval"]["before"]["eval_loss"]
