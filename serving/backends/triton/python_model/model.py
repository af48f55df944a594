"""servekit's Triton Python-backend model: a Hugging Face causal LM generating for a whole batch at once.

This file runs inside Triton's Python-backend stub, with the Triton venv's interpreter (torch, transformers,
numpy<2), never inside servekit. servekit copies it into the generated model repository; `config.pbtxt`
parameters name the model directory, the context limit and the dtype.

The dynamic batcher hands `execute` several requests; they are generated together (left padding, position ids
from the attention mask, one shared KV cache), each with its own sampling, stop sequences and token limit, and
each streamed through its own response sender (the model is decoupled). Prompts arrive as final text: the
chat template is applied by servekit, which also counts prompt tokens with the same tokenizer.
"""

from __future__ import annotations

import json
import locale
import sys
from dataclasses import dataclass, field

import numpy as np
import torch
import triton_python_backend_utils as pb_utils
from transformers import AutoModelForCausalLM, AutoTokenizer

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
REPLACEMENT_CHAR = "\ufffd"
# `is_cancelled` is a round trip to the Triton process; asking on every token of every row costs more than the
# few extra tokens an abandoned request may generate.
CANCEL_CHECK_EVERY = 8


class RejectedRequest(ValueError):
    """A request this model will not run; sent back as INVALID_ARG, the message is shown to the client."""


@dataclass
class SamplingParameters:
    max_tokens: int
    temperature: float
    top_p: float
    stop: list[str]
    ignore_eos: bool
    seed: int | None

    @classmethod
    def parse(cls, raw: str, prompt_tokens: int, max_model_len: int) -> SamplingParameters:
        values = json.loads(raw) if raw else {}
        if not isinstance(values, dict):
            raise RejectedRequest("sampling_parameters must be a JSON object")
        room = max_model_len - prompt_tokens
        if room <= 0:
            raise RejectedRequest(
                f"This model's maximum context length is {max_model_len} tokens. "
                f"However, your prompt has {prompt_tokens} tokens."
            )
        max_tokens = int(values.get("max_tokens") or room)
        if max_tokens > room:
            raise RejectedRequest(
                f"This model's maximum context length is {max_model_len} tokens. However, you requested "
                f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the prompt, {max_tokens} in the completion)."
            )
        stop = values.get("stop") or []
        stop = [stop] if isinstance(stop, str) else list(stop)
        temperature = float(values["temperature"]) if values.get("temperature") is not None else 1.0
        top_p = float(values["top_p"]) if values.get("top_p") is not None else 1.0
        if max_tokens < 1 or temperature < 0 or not 0 < top_p <= 1:
            raise RejectedRequest("max_tokens must be >= 1, temperature >= 0 and 0 < top_p <= 1")
        seed = values.get("seed")
        return cls(max_tokens, temperature, top_p, [s for s in stop if s], bool(values.get("ignore_eos")), seed)


@dataclass
class Job:
    """One request of the batch and its generation state."""

    sender: object
    request: object
    prompt: str
    prompt_tokens: int
    stream: bool
    params: SamplingParameters
    generator: torch.Generator
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    sent: str = ""
    finish_reason: str | None = None

    def releasable_text(self) -> str:
        """Text that can go out now: all of it once finished; otherwise hold back a trailing partial UTF-8
        character and any tail that could still grow into a stop sequence."""
        if self.finish_reason:
            return self.text
        text = self.text.rstrip(REPLACEMENT_CHAR)
        held = 0
        for stop in self.params.stop:
            for size in range(min(len(stop) - 1, len(text)), held, -1):
                if text.endswith(stop[:size]):
                    held = size
                    break
        return text[: len(text) - held]


def pick_token(logits: torch.Tensor, params: SamplingParameters, generator: torch.Generator) -> int:
    """Greedy at temperature 0 (deterministic, what tests compare), else temperature + nucleus sampling."""
    if params.temperature == 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / params.temperature, dim=-1)
    if params.top_p < 1:
        sorted_probs, order = torch.sort(probs, descending=True)
        outside_nucleus = sorted_probs.cumsum(-1) - sorted_probs >= params.top_p
        sorted_probs[outside_nucleus] = 0
        return int(order[torch.multinomial(sorted_probs, 1, generator=generator)])
    return int(torch.multinomial(probs, 1, generator=generator))


def text_tensor(name: str, value: str) -> pb_utils.Tensor:
    return pb_utils.Tensor(name, np.array([[value.encode("utf-8")]], dtype=np.object_))


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        # LC_ALL in tritonserver's environment does not reach the stub; without this, non-ASCII text breaks.
        locale.setlocale(locale.LC_ALL, "C.UTF-8")
        sys.stdout.reconfigure(encoding="utf-8")
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config["parameters"].items()}
        self.max_model_len = int(parameters["max_model_len"])
        self.tokenizer = AutoTokenizer.from_pretrained(parameters["model_path"], padding_side="left")
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(
            parameters["model_path"], dtype=getattr(torch, parameters["dtype"])
        ).eval()
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos if eos is not None else self.tokenizer.eos_token_id])

    def execute(self, requests: list) -> None:
        jobs = [job for job in map(self._admit, requests) if job is not None]
        if not jobs:
            return None
        try:
            self._generate(jobs)
        except Exception as exc:  # a failed batch must still end every request, or its client hangs
            error = pb_utils.TritonError(f"generation failed: {exc!r}")
            for job in jobs:
                if job.finish_reason is None:
                    job.sender.send(pb_utils.InferenceResponse(error=error), flags=FINAL)
        return None

    def _admit(self, request: object) -> Job | None:
        """Parse one request; a bad one is answered with INVALID_ARG at once and left out of the batch."""
        sender = request.get_response_sender()
        try:
            prompt = pb_utils.get_input_tensor_by_name(request, "text_input").as_numpy().reshape(-1)[0]
            prompt = prompt.decode("utf-8")
            stream_input = pb_utils.get_input_tensor_by_name(request, "stream")
            raw_params = pb_utils.get_input_tensor_by_name(request, "sampling_parameters")
            raw = raw_params.as_numpy().reshape(-1)[0].decode("utf-8") if raw_params is not None else ""
            prompt_tokens = len(self.tokenizer(prompt, add_special_tokens=False).input_ids)
            if prompt_tokens == 0:
                raise RejectedRequest("the prompt is empty")
            params = SamplingParameters.parse(raw, prompt_tokens, self.max_model_len)
        except (RejectedRequest, ValueError, TypeError, UnicodeDecodeError) as exc:
            error = pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
            sender.send(pb_utils.InferenceResponse(error=error), flags=FINAL)
            return None
        generator = torch.Generator()
        if params.seed is None:
            generator.seed()
        else:
            generator.manual_seed(int(params.seed))
        stream = bool(stream_input.as_numpy().reshape(-1)[0]) if stream_input is not None else False
        return Job(sender, request, prompt, prompt_tokens, stream, params, generator)

    @torch.inference_mode()
    def _generate(self, jobs: list[Job]) -> None:
        encoded = self.tokenizer(
            [job.prompt for job in jobs], return_tensors="pt", padding=True, add_special_tokens=False
        )
        input_ids, attention_mask = encoded.input_ids, encoded.attention_mask
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        past = None
        while True:
            output = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                past_key_values=past,
                use_cache=True,
            )
            past = output.past_key_values
            logits = output.logits[:, -1, :].float()
            next_ids = []
            for row, job in enumerate(jobs):
                if job.finish_reason is None:
                    self._advance(job, pick_token(logits[row], job.params, job.generator))
                next_ids.append(job.tokens[-1] if job.tokens else self.tokenizer.pad_token_id)
            if all(job.finish_reason for job in jobs):
                return
            input_ids = torch.tensor(next_ids).unsqueeze(1)
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(jobs), 1))], dim=1)
            position_ids = position_ids[:, -1:] + 1

    def _advance(self, job: Job, token: int) -> None:
        """Take one token: detokenize, apply stop sequences and limits, stream what is safe to send."""
        job.tokens.append(token)
        if len(job.tokens) % CANCEL_CHECK_EVERY == 0 and job.request.is_cancelled():
            job.finish_reason = "cancelled"
            job.sender.send(flags=FINAL)
            return
        if token in self.eos_ids and not job.params.ignore_eos:
            job.finish_reason = "stop"
        else:
            job.text = self.tokenizer.decode(job.tokens, skip_special_tokens=True)
            hits = [index for index in (job.text.find(stop) for stop in job.params.stop) if index >= 0]
            if hits:
                job.text = job.text[: min(hits)]
                job.finish_reason = "stop"
            elif len(job.tokens) >= job.params.max_tokens:
                job.finish_reason = "length"
        if job.finish_reason:
            self._send_final(job)
        elif job.stream:
            releasable = job.releasable_text()
            if len(releasable) > len(job.sent):
                job.sender.send(pb_utils.InferenceResponse([text_tensor("text_output", releasable[len(job.sent) :])]))
                job.sent = releasable

    def _send_final(self, job: Job) -> None:
        text = job.text[len(job.sent) :] if job.stream else job.text
        outputs = [
            text_tensor("text_output", text),
            text_tensor("finish_reason", job.finish_reason),
            pb_utils.Tensor("num_output_tokens", np.array([[len(job.tokens)]], dtype=np.int32)),
        ]
        job.sender.send(pb_utils.InferenceResponse(outputs), flags=FINAL)
