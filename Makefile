# machine-config-daemon: the two commands of the README, plus helpers.
#   make demo   – install packages, build, run the demo on a sandbox node
#   make test   – install packages, build, run the whole test suite (what CI runs)
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: setup build demo test lint unit bench

setup:
	packaging/setup-dev.sh

build: setup
	$(CARGO) build --workspace --release

demo: build
	scripts/demo.sh

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --features machine-config-daemon/failpoints -- -D warnings

test: lint
	$(CARGO) test --workspace --features machine-config-daemon/failpoints --no-fail-fast

unit:
	$(CARGO) test --workspace --lib
