"""The shipped prompt set and the output-length spec (`64` fixed, `32:128` sampled per request).

Varied prompts keep the engine's prefix cache from turning a load test into a cache benchmark; a sampled
`max_tokens` spreads request lengths the way real traffic does."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PROMPTS = Path(__file__).with_name("prompts.jsonl")


def load_prompts(path: Path = DEFAULT_PROMPTS) -> list[str]:
    """One JSON object with a `prompt` field per line; blank lines are skipped."""
    prompts = [json.loads(line)["prompt"] for line in path.read_text().splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"{path} holds no prompts")
    return prompts


@dataclass(frozen=True)
class MaxTokens:
    """Output length per request: fixed (`low == high`) or uniform in [low, high]."""

    low: int
    high: int

    @classmethod
    def parse(cls, spec: str) -> MaxTokens:
        """`64` or `32:128`; anything else raises ValueError naming the spec."""
        parts = spec.split(":")
        try:
            low, high = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else (0, -1)
        except ValueError:
            raise ValueError(f"bad --max-tokens {spec!r}: expected N or LOW:HIGH") from None
        if not 1 <= low <= high:
            raise ValueError(f"bad --max-tokens {spec!r}: expected 1 <= LOW <= HIGH")
        return cls(low, high)

    def sample(self, rng: random.Random) -> int:
        return self.low if self.low == self.high else rng.randint(self.low, self.high)

    def __str__(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}:{self.high}"
