"""Load shapes: how many users run at each moment, as Locust `LoadTestShape`s (Locust calls `tick()` ~1/s).

Every shape ends (returns None) at its duration, so every run is bounded in time. The Poisson shape holds a
pool of users steady; its open-loop arrivals come from the users' pacing (`loadtest.users.poisson_pacing`)."""

from __future__ import annotations

from locust import LoadTestShape

Tick = tuple[int, float] | None


class ConstantShape(LoadTestShape):
    """`users` users (spawned at `spawn_rate`/s) for `duration_s`."""

    def __init__(self, users: int, duration_s: float, spawn_rate: float | None = None) -> None:
        super().__init__()
        self.users, self.duration_s = users, duration_s
        self.spawn_rate = spawn_rate or float(users)  # everyone within ~1 s: the run measures the level, not a ramp

    def tick(self) -> Tick:
        return (self.users, self.spawn_rate) if self.get_run_time() < self.duration_s else None


class StepShape(LoadTestShape):
    """Ramp in `steps` equal steps up to `users`, each held for duration/steps: where does latency break?"""

    def __init__(self, users: int, duration_s: float, steps: int = 4) -> None:
        super().__init__()
        self.users, self.duration_s, self.steps = users, duration_s, max(1, min(steps, users))

    def tick(self) -> Tick:
        run_time = self.get_run_time()
        if run_time >= self.duration_s:
            return None
        step = min(int(run_time / (self.duration_s / self.steps)), self.steps - 1)
        count = max(1, round(self.users * (step + 1) / self.steps))
        return count, float(count)


class SweepShape(LoadTestShape):
    """Concurrency sweep 1, 2, 4, ... up to `users` (or explicit `levels`), an equal slice of the duration each.

    The report plots throughput against latency per level: the curve llmperf and genai-perf draw."""

    def __init__(self, users: int, duration_s: float, levels: list[int] | None = None) -> None:
        super().__init__()
        self.levels = levels or doubling_levels(users)
        self.duration_s = duration_s

    def tick(self) -> Tick:
        run_time = self.get_run_time()
        if run_time >= self.duration_s:
            return None
        level = self.levels[min(int(run_time / (self.duration_s / len(self.levels))), len(self.levels) - 1)]
        return level, float(level)


class PoissonShape(ConstantShape):
    """Open-loop arrivals at `rate` req/s: a constant pool of `users` whose pacing draws exponential gaps.

    The pool caps concurrency; keep users above rate x latency or arrivals queue behind busy users."""

    def __init__(self, users: int, duration_s: float, rate: float) -> None:
        super().__init__(users, duration_s)
        self.rate = rate


def doubling_levels(users: int) -> list[int]:
    """1, 2, 4, ... below `users`, then `users` itself."""
    levels, level = [], 1
    while level < users:
        levels.append(level)
        level *= 2
    return [*levels, users]


SHAPES = ("constant", "step", "sweep", "poisson")


def shape_spec(name: str, users: int, duration_s: float, rate: float | None = None) -> tuple[type, dict]:
    """The class called `name` and its arguments; an unknown name raises ValueError listing the valid ones."""
    if name not in SHAPES:
        raise ValueError(f"unknown shape {name!r}; valid shapes: {', '.join(SHAPES)}")
    if name == "poisson":
        if not rate or rate <= 0:
            raise ValueError("the poisson shape needs a positive --rate (arrivals per second)")
        return PoissonShape, {"users": users, "duration_s": duration_s, "rate": rate}
    shape = {"constant": ConstantShape, "step": StepShape, "sweep": SweepShape}[name]
    return shape, {"users": users, "duration_s": duration_s}


def make_shape(name: str, users: int, duration_s: float, rate: float | None = None) -> LoadTestShape:
    shape, arguments = shape_spec(name, users, duration_s, rate)
    return shape(**arguments)
