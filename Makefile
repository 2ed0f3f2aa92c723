# Two commands for a fresh machine: `make demo` (install + end-to-end run), `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: install system-deps demo test configs bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,sagemaker]'
	$(PY) -m pip install --quiet --no-deps sagemaker-core==2.27.0  # see pyproject.toml, extra "sagemaker"
	touch $@

demo: install
	$(PY) -m clients.demo

# perf_analyzer (the benchmarks' cross-check) needs libb64 from Debian.
system-deps:
	@dpkg -s libb64-0d >/dev/null 2>&1 || { apt-get install -y -q libb64-0d || \
	  { apt-get update -q && apt-get install -y -q libb64-0d; }; }

test: install system-deps
	$(PY) -m pytest

# Regenerate the committed gpu configs after changing a builder.
configs: install
	$(PY) -m builders --target gpu --configs-only --out model_repository

bench: install system-deps
	$(PY) -m benchmarks
	$(PY) -m benchmarks.lama_latency

clean:
	rm -rf build benchmarks/results
