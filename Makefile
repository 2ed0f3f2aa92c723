# Two commands for a fresh machine: `make demo` (install + end-to-end run), `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: install demo test configs bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

demo: install
	$(PY) -m clients.demo

test: install
	$(PY) -m pytest

# Regenerate the committed gpu configs after changing a builder.
configs: install
	$(PY) -m builders --target gpu --configs-only --out model_repository

bench: install
	$(PY) -m benchmarks.latency
	$(PY) -m benchmarks.lama_latency

clean:
	rm -rf build benchmarks/results
