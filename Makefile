# machine-config-daemon: the two commands of the README, plus helpers.
#   make demo   – install packages, build, run the demo on a sandbox node
#   make test   – install packages, build, run the whole test suite (what CI runs)
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: setup setup-vm build demo test lint unit bench fuzz vm-tests packages

setup:
	packaging/setup-dev.sh

# What the VM tests need on top (QEMU, mmdebstrap, socat).
setup-vm:
	packaging/setup-dev.sh --vm

build: setup
	$(CARGO) build --workspace --release

demo: build
	scripts/demo.sh

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --features machine-config-daemon/failpoints -- -D warnings

# The reliability sweep's parts (crash points, API faults, bad input, secrets, fuzzing) record their
# results in SWEEP_DIR; the last step prints them with one summary line and fails if a part is missing.
SWEEP_DIR := $(CURDIR)/target/reliability
# Then the VM scenarios (real systemd, ostree staging and reboots under QEMU): they fail, never skip, when
# QEMU cannot run. VM_TESTS=0 leaves them out of a local run (CI always runs them).
# The packages are built and installed into temporary roots before the VM tests, which reuse the same
# release build of the daemon.
test: lint setup-vm
	rm -rf $(SWEEP_DIR)
	MCD_SWEEP_DIR=$(SWEEP_DIR) $(CARGO) test --workspace --features machine-config-daemon/failpoints --no-fail-fast
	scripts/fuzz.sh --self-test
	MCD_SWEEP_DIR=$(SWEEP_DIR) FUZZ_SECONDS=$${FUZZ_SECONDS:-15} scripts/fuzz.sh
	$(CARGO) run -q -p testbed -- sweep-report --dir $(SWEEP_DIR)
	packaging/build-packages.sh $(PACKAGES_DIR)
	packaging/test-packages.sh $(PACKAGES_DIR)
	if [ "$${VM_TESTS:-1}" != 0 ]; then vm-tests/run; fi

# The RPM (rpmbuild -bb from packaging/machine-config-daemon.spec) and the Debian package (dpkg-deb),
# from a release build; README "Install on a node" says what is in them.
PACKAGES_DIR := $(CURDIR)/target/packages
packages: setup
	packaging/build-packages.sh $(PACKAGES_DIR)
	packaging/test-packages.sh $(PACKAGES_DIR)

# A short run of every fuzz target (FUZZ_SECONDS=3600 make fuzz for a long one).
fuzz:
	scripts/fuzz.sh

unit:
	$(CARGO) test --workspace --lib

# One benchmark report: every figure against its target (README "Tests, benchmarks, fuzzing"); exits 1
# if one is missed.
BENCH_DIR := $(CURDIR)/target/bench-figures
bench: setup
	rm -rf $(BENCH_DIR)
	MCD_BENCH_DIR=$(BENCH_DIR) $(CARGO) bench -p machine-config-daemon --benches
	$(CARGO) run -q -p testbed -- bench-report --dir $(BENCH_DIR)
