"""The served versions: every public model name, the registry version behind it and the engine it runs on.

A base version owns an engine; an adapter rides on its base's engine (multi-LoRA) under its own name
(`name:tag`). A version has one identity everywhere (routes, rollouts, load/unload, the pin header): its served
name, which its registry tag also finds."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from serving.backends.supervisor import EngineSupervisor
from serving.errors import InvalidRequestError, ModelNotFoundError
from serving.pool.discovery import DiscoveredReplicas
from serving.protocol import CapacityProfile
from serving.registry.adapters import adapter_rank, unserved_modules
from serving.registry.capacity import capacity_profile
from serving.registry.store import ModelMissingError, RegisteredModel, get_model_by_tag

BASE_KINDS = ("base", "merged")
"""Registry kinds that need an engine of their own (everything else must ride on one as an adapter)."""
VERSION_NAME = re.compile(r"^[a-z0-9]([-._a-z0-9]*[a-z0-9])?(:[a-z0-9]([-._a-z0-9]*[a-z0-9])?)?$")


@dataclass
class ServedVersion:
    """A public model name bound to the registry version and the engine that serve it."""

    name: str
    model: RegisteredModel
    supervisor: EngineSupervisor | None
    """Its first managed or remote engine; None when DNS discovery finds every replica."""
    max_model_len: int
    engine_model: str
    parent: str | None = None
    created: int = field(default_factory=lambda: int(time.time()))
    capacity: CapacityProfile | None = None
    """What `servekit capacity` measured for this version (read once, when it is made servable)."""
    replicas: list[EngineSupervisor] = field(default_factory=list)
    """Every engine that runs this version (its pool; discovered ones join and leave); `supervisor` is the first.
    An adapter shares its base's list."""
    discovery: DiscoveredReplicas | None = None
    """Where more replicas are found while it serves (a base version's `discovery` settings)."""

    def __post_init__(self) -> None:
        if not self.replicas and self.supervisor is not None:
            self.replicas.append(self.supervisor)

    @property
    def engine_name(self) -> str:
        """The engine kind that serves it (vllm, triton)."""
        if self.supervisor is not None:
            return self.supervisor.backend.engine_name
        assert self.discovery is not None, "a version without a first engine has discovered ones"
        return self.discovery.engine

    @property
    def version(self) -> str:
        return self.model.tag

    @property
    def engine(self) -> str:
        """The name of the engine (its base version) that runs this version."""
        return self.parent or self.name


@dataclass(frozen=True)
class LoraCapacity:
    """What the engines accept as adapters: the largest rank (0: none) and the layers they carry them on."""

    max_rank: int
    target_modules: frozenset[str] | None = None
    """None: every layer."""
    max_loras: int = 4
    """Adapters one engine keeps loaded (a pool's replica unloads its least recently used one beyond)."""


class ServedVersions(Mapping[str, ServedVersion]):
    """Served versions by served name (a configured base's public name; the registry tag otherwise)."""

    def __init__(self) -> None:
        self._by_name: dict[str, ServedVersion] = {}

    def __getitem__(self, name: str) -> ServedVersion:
        return self._by_name[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def add(self, served: ServedVersion) -> None:
        self._by_name[served.name] = served

    def remove(self, name: str) -> None:
        del self._by_name[name]

    def riding_on(self, base: str) -> list[ServedVersion]:
        """The adapters served on `base`'s engine."""
        return [served for served in self._by_name.values() if served.parent == base]

    def find(self, name: str) -> ServedVersion | None:
        """The served version `name` means: its served name, else its registry tag (the first one served, when
        one registry version is served by several engines)."""
        return self._by_name.get(name) or next((s for s in self._by_name.values() if s.version == name), None)

    def resolve(self, name: str) -> ServedVersion:
        served = self.find(name)
        if served is None:
            raise ModelNotFoundError(name, sorted(self._by_name))
        return served

    def identify(self, name: str) -> str:
        """The served name `name` stands for, served yet or not (a version not served yet will be served under
        its registry tag)."""
        served = self.find(name)
        return served.name if served is not None else self.registered(name).tag

    def registered(self, tag: str) -> RegisteredModel:
        """The registry version for `tag`; names that could never be a version (paths, `..`) are refused first."""
        if not VERSION_NAME.match(tag) or ".." in tag:
            raise InvalidRequestError(f"`{tag}` is not a valid version name (`name` or `name:tag`).", param="version")
        try:
            return get_model_by_tag(tag)
        except ModelMissingError as exc:
            raise ModelNotFoundError(tag, sorted(self._by_name)) from exc


def adapter_version(model: RegisteredModel, bases: Iterable[ServedVersion], lora: LoraCapacity) -> ServedVersion:
    """`model` served on the engine of the base it was trained for, once the engines can carry it."""
    kind = model.labels.get("kind", "unknown")
    if kind != "adapter":
        raise InvalidRequestError(f"`{model.tag}` is a {kind} version, not an adapter.", param="version")
    bases = list(bases)
    trained_for = model.labels.get("base")
    base = next((b for b in bases if b.version == trained_for), None)
    if base is None:
        served_bases = ", ".join(f"`{b.version}`" for b in bases)
        raise InvalidRequestError(
            f"Adapter `{model.tag}` was trained for `{trained_for}`, but the engines serve {served_bases}.",
            param="version",
            code="adapter_base_mismatch",
        )
    rank = adapter_rank(model.path)
    if rank > lora.max_rank:
        raise InvalidRequestError(
            f"Adapter `{model.tag}` has rank {rank}; the engine accepts ranks up to {lora.max_rank} "
            "(engine.max_lora_rank; 0 when engine.enable_lora is off).",
            param="version",
            code="adapter_rank_too_large",
        )
    if unserved := unserved_modules(model.path, lora.target_modules):
        raise InvalidRequestError(
            f"Adapter `{model.tag}` trains {', '.join(f'`{m}`' for m in unserved)}, but the engine carries "
            f"adapters on {', '.join(sorted(lora.target_modules or ()))} only "
            "(engine.lora_target_modules; null for every layer, at a cost on every token).",
            param="version",
            code="adapter_modules_not_served",
        )
    return ServedVersion(
        model.tag, model, base.supervisor, base.max_model_len, model.tag, parent=base.name,
        capacity=capacity_profile(model), replicas=base.replicas, discovery=base.discovery,
    )  # fmt: skip
