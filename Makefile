# Two commands for a fresh machine: `make demo` (install + end-to-end run), `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: install system-deps demo test test-quick configs bench clean compat gpu-smoke mutation

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,sagemaker]'
	$(PY) -m pip install --quiet --no-deps sagemaker-core==2.27.0  # see pyproject.toml, extra "sagemaker"
	touch $@

demo: install system-deps
	$(PY) -m demo

# perf_analyzer (the benchmarks' cross-check) needs libb64 from Debian; local_server compiles
# a one-function bind() shim (SageMaker routes on loopback) with the system C compiler.
system-deps:
	@dpkg -s libb64-0d >/dev/null 2>&1 || { apt-get install -y -q libb64-0d || \
	  { apt-get update -q && apt-get install -y -q libb64-0d; }; }
	@command -v cc >/dev/null 2>&1 || { apt-get install -y -q gcc || \
	  { apt-get update -q && apt-get install -y -q gcc; }; }

test: install system-deps
	$(PY) -m pytest

# The inner-loop tier: tests marked quick (docs/contributing.md), under 5 minutes on 2 cores.
test-quick: install system-deps
	$(PY) -m pytest -m quick

# Regenerate the committed gpu configs after changing a builder.
configs: install
	$(PY) -m builders --target gpu --configs-only --out model_repository

bench: install system-deps
	$(PY) -m benchmarks
	$(PY) -m benchmarks.lama_latency

clean:
	rm -rf build benchmarks/results

# Mutation testing of the guards, the request guard, the registry and teardown against their quick
# tests: minutes, so not part of `make test` (docs/mutation-testing.md). MUTATION_ARGS="--target registry".
mutation: install
	$(PY) -m benchmarks.mutation $(MUTATION_ARGS)

# A machine with Docker and an NVIDIA GPU: the gpu repository in NVIDIA's tritonserver image,
# every client route, a perf_analyzer sweep, pass/fail table. GPU_SMOKE_ARGS=--dry-run prints the commands.
gpu-smoke: install
	$(PY) -m benchmarks.gpu_smoke $(GPU_SMOKE_ARGS)

# Load the gpu and cpu artifacts with the oldest runtimes the compatibility table names that
# PyPI has for this Python, and with the default image's, each in its own venv under build/compat
# (sagemaker_deploy/compatibility.py; results in the README). PyTorch is checked by file format only.
COMPAT := build/compat
COMPAT_RUNTIMES := onnx:onnxruntime==1.16.3 onnx:onnxruntime==1.24.4 dali:nvidia-dali-cuda120==1.31.0 \
	dali:nvidia-dali-cuda120==2.1.0
compat: install
	$(PY) -m builders --target gpu --out $(COMPAT)/gpu
	$(PY) -m builders --target cpu --models dali lama_decode defect_dali lama --out $(COMPAT)/cpu
	@for runtime in $(COMPAT_RUNTIMES); do kind=$${runtime%%:*}; package=$${runtime#*:}; \
	  venv=$(COMPAT)/venv-$$(echo $$package | tr '=' '-'); \
	  [ -x $$venv/bin/python ] || { $(PYTHON) -m venv $$venv && \
	    $$venv/bin/pip install --quiet "numpy<2" $$package; } || exit 1; \
	  files=$$(find $(COMPAT)/gpu $(COMPAT)/cpu -name "model.$$kind" | sort); \
	  $$venv/bin/python sagemaker_deploy/compat_probe.py $$kind $$files || failed=1; \
	done; exit $${failed:-0}
