# The README's two commands, as make targets. torch 2.13.0 is installed first (the CPU wheel on disk).
VENV ?= .venv
PY = $(VENV)/bin/python

$(VENV)/bin/activate:
	python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0

run: $(VENV)/bin/activate
	$(PY) -m pip install -q -e .
	$(VENV)/bin/tricklab train

test: $(VENV)/bin/activate
	$(PY) -m pip install -q -e ".[dev,lightning,ray,tensorboard,transformers,keras]"
	$(PY) -m pytest -q -m "slow or not slow"

lint: $(VENV)/bin/activate
	$(PY) -m pip install -q -e ".[dev]"
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache

.PHONY: run test lint
