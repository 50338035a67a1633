# Ferry's set-up, serve and test commands. Everything a fresh machine needs beyond Rust and Python 3 with pip
# is installed here: ONNX Runtime and the test clients go into a project-local .venv.

VENV := .venv
PYTHON := $(VENV)/bin/python
GRPC_PORT ?= 8001
SOAK_SECONDS ?= 1800
FUZZ_SECONDS ?= 600
FUZZ_JOBS ?= 1
PEERS_ARGS ?=

.PHONY: setup clients-setup serve test lint bench bench-serving bench-peers bench-cost bench-census bench-adaptive bench-pipelines soak models fuzz

## setup: create .venv with ONNX Runtime (libonnxruntime.so), onnx, numpy, tritonclient and pytest
setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

## clients-setup: what the other languages' client tests need (tests/tests/clients.rs): protoc's Go plugins and ghz
## (go install) into target/tools/bin and the Node client's packages (npm ci); protoc comes from Debian's
## protobuf-compiler. Without them those tests say SKIPPED (and fail under CI)
clients-setup:
	clients/setup.sh

## serve: serve the bundled example model repository on gRPC port $(GRPC_PORT)
serve: setup
	cargo run --release -p ferry-server --bin ferry -- --model-repository examples/model_repository --grpc-port $(GRPC_PORT)

## test: run every test: unit, end-to-end over loopback gRPC, and the Python tritonclient interop suite
test: setup
	cargo test --workspace --all-targets
	cargo test --workspace --doc

## lint: formatting and clippy with warnings denied
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

## bench: criterion micro-benchmarks of request parsing and the batcher
bench: setup
	cargo bench -p ferry-benches --bench request_parsing --bench batcher

## bench-serving: Ferry over loopback gRPC vs in-process ONNX Runtime; writes benches/results/serving.{md,svg};
## when PEERS is set, runs bench-peers afterwards
bench-serving: setup
	cargo bench -p ferry-benches --bench serving
	@if [ -n "$(PEERS)" ]; then $(MAKE) bench-peers; \
	else echo "bench-serving: PEERS is not set, so the side-by-side checks (make bench-peers) were skipped"; fi

## bench-peers: the side-by-side checks of ../shared/bench (Ferry vs tritonserver 2.51, in-process ONNX Runtime and
## the loopback limit, one at a time on the same ports) and a concurrency sweep; needs PEERS, the peers toolkit
## (PEERS=$$HOME/ferry-peers ../shared/bench/peers/setup.sh); writes benches/results/peers.{md,svg}; not in CI
bench-peers: setup
	@if [ -z "$(PEERS)" ]; then \
	  echo "bench-peers: set PEERS to the peers toolkit (set it up with PEERS=\$$HOME/ferry-peers ../shared/bench/peers/setup.sh)"; \
	  exit 2; fi
	cargo build --release -p ferry-server --bin ferry
	$(PYTHON) benches/peers/peers.py $(PEERS_ARGS)

## bench-cost: server CPU time and context switches per request (perf stat, h2load, 32 in flight) and latency at
## 1 in flight, Ferry vs the loopback limit on mlp_small; needs PEERS, h2load and perf; prints a table; not in CI
bench-cost: setup
	@if [ -z "$(PEERS)" ]; then echo "bench-cost: set PEERS to the peers toolkit"; exit 2; fi
	cargo build --release -p ferry-server --bin ferry
	$(PYTHON) benches/peers/cost.py $(COST_ARGS)

## bench-census: instructions (callgrind), system calls, futex calls and context switches (perf tracepoints) per
## request on mlp_small at 32 in flight, Ferry vs the loopback limit: counts that a busy machine barely moves;
## needs PEERS, valgrind, h2load and perf; prints a table; not in CI
bench-census: setup
	@if [ -z "$(PEERS)" ]; then echo "bench-census: set PEERS to the peers toolkit"; exit 2; fi
	cargo build --release -p ferry-server --bin ferry
	$(PYTHON) benches/peers/census.py $(CENSUS_ARGS)

## bench-adaptive: latency at 1 and throughput at 32 and 128 in flight for dynamic_batching { }, a fixed 500 µs delay
## and the adaptive 500 µs delay; writes benches/results/adaptive_delay.md
bench-adaptive: setup
	cargo bench -p ferry-benches --bench adaptive_delay

## bench-pipelines: pad-to-bucket against batching off on sequences of 1 to 128 tokens, the pipeline ensemble against
## calling its members one by one, and response cache hits against misses; writes benches/results/pipelines.md
bench-pipelines: setup
	cargo bench -p ferry-benches --bench pipelines

## soak: SOAK_SECONDS (default 1800) of mixed traffic against a release ferry, RSS sampled each second;
## writes benches/results/soak.{md,csv,svg} and fails on a crash, a failed valid request or RSS growth (not in CI)
soak: setup
	cargo build --release -p ferry-server --bin ferry
	$(PYTHON) benches/soak/soak.py --seconds $(SOAK_SECONDS) $(SOAK_ARGS)

## models: regenerate the committed ONNX files from examples/generate_models.py
models: setup
	$(PYTHON) examples/generate_models.py

## fuzz: every cargo fuzz target for FUZZ_SECONDS each (600), FUZZ_JOBS at a time (1); needs `cargo install cargo-fuzz`
fuzz: setup
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_JOBS=$(FUZZ_JOBS) fuzz/run.sh
