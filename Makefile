# The two commands a newcomer needs:  make run   (install + main job)   and   make test   (everything CI runs).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint devcluster bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The main job on the embedded defaults. Until the daemon lands it checks the bundled example SDL
# and prints the group specs Akash would put on chain for it.
run: $(STAMP)
	$(BIN)/gpu-provider sdl check sdl/examples/llm-inference.yaml
	$(BIN)/gpu-provider sdl groups sdl/examples/llm-inference.yaml

lint: $(STAMP)
	$(BIN)/ruff check provider sdl tests bench
	$(BIN)/ruff format --check provider sdl tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

# Lint, types, import contracts, then every test: unit, SDL conformance, and the cluster tests
# against a real control plane (built once from hack/devcluster, then cached).
test: lint
	$(BIN)/python -m pytest

devcluster: $(STAMP)
	$(BIN)/gpu-provider devcluster up

bench: $(STAMP)
	$(BIN)/python bench/sdl_parse.py
	$(BIN)/python bench/devcluster.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
