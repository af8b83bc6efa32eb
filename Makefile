# xmpp-sip-gateway. Every target installs what it needs (Debian packages through apt-get,
# as root or through sudo; a Python venv under integration/.venv) and says so.
SHELL := /bin/bash
CARGO ?= cargo
BIN := target/debug/xmpp-sip-gateway

.PHONY: all deps build release test unit integration lint bench bench-calls demo run clean

all: build

## Build prerequisites beyond Rust (cmake for libopus); installs only what is missing.
deps:
	@bash scripts/build-deps.sh

build: deps
	$(CARGO) build --locked
	$(CARGO) build --locked --example bridge_driver

release: deps
	$(CARGO) build --locked --release

## Unit tests, then the integration suite against real Prosody and ejabberd.
test: unit integration

unit: deps
	$(CARGO) test --locked

integration: build
	XSG_BIN=$(CURDIR)/$(BIN) XSG_BRIDGE_DRIVER=$(CURDIR)/target/debug/examples/bridge_driver \
	  bash integration/run.sh

lint: deps
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

## Criterion benches; figures are recorded in docs/BENCHMARKS.md.
bench: deps
	$(CARGO) bench --locked --bench router --bench sip --bench rtp --bench codec --bench srtp --bench calls

## Call load: XMPP -> SIP calls through real Prosody and Kamailio against the release build;
## prints setup latency, calls/s, CPU and memory per call (docs/BENCHMARKS.md).
bench-calls: release
	XSG_BIN=$(CURDIR)/target/release/xmpp-sip-gateway bash integration/bench_calls.sh $(ARGS)

## A local Prosody plus the gateway, and a scripted XMPP user that talks to it.
demo: build
	XSG_BIN=$(CURDIR)/$(BIN) bash integration/demo.sh

## The gateway with ./component.toml (copy component.toml.example first).
run: deps
	@test -f component.toml || { echo "make run: no component.toml here; start from: cp component.toml.example component.toml"; exit 64; }
	$(CARGO) run --locked --release -- --config component.toml

clean:
	$(CARGO) clean
	rm -rf integration/.venv integration/browser/node_modules integration/browser/dist
