# The two commands a newcomer needs:  make run   (install + main job)   and   make test   (everything CI runs).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run demo test lint devcluster bench clean proto

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The Akash adapter's protobuf types (provider/chain/akash/pb, committed): regenerate them from the
# vendored .proto files after changing an input, then commit; `make lint` checks they match.
proto: $(STAMP)
	$(BIN)/python hack/akash-proto/generate.py

# The main job on the embedded defaults: the provider daemon following the mock chain, selling the
# dev cluster's simulated GPUs (see hack/run-local.sh).
run: $(STAMP)
	$(BIN)/gpu-provider sdl check sdl/examples/llm-inference.yaml
	bash hack/run-local.sh

# The whole flow, narrated: a tenant deploys sdl/examples/llm-inference.yaml on the dev cluster through
# the mock chain and a real daemon, sees it ready, closes it and sees the escrow settled.
demo: $(STAMP)
	$(BIN)/gpu-provider demo

lint: $(STAMP)
	$(BIN)/python hack/akash-proto/generate.py --check
	$(BIN)/ruff check provider sdl tests bench
	$(BIN)/ruff format --check provider sdl tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

# Lint, types, import contracts, then every test: unit, SDL conformance, market, and the cluster
# tests against a real control plane with a real worker node (its Debian packages installed and its
# components built here once from hack/devcluster, then cached by pin hash).
test: lint
	bash hack/devcluster/host-packages.sh
	bash hack/devcluster/build.sh --real-node >/dev/null & dc=$$!; \
	  bash hack/akash-devnet/build.sh >/dev/null && bash hack/akash-jwt/build.sh >/dev/null; ak=$$?; \
	  wait $$dc && [ $$ak -eq 0 ]
	bash hack/test.sh $(BIN)/python

devcluster: $(STAMP)
	$(BIN)/gpu-provider devcluster up

bench: $(STAMP)
	$(BIN)/python bench/sdl_parse.py
	$(BIN)/python bench/devcluster.py
	$(BIN)/python bench/realnode.py
	$(BIN)/python bench/inventory.py
	$(BIN)/python bench/bid_engine.py
	$(BIN)/python bench/lifecycle.py
	$(BIN)/python bench/failover.py
	$(BIN)/python bench/akash_bid.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
