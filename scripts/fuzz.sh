#!/usr/bin/env bash
# Fuzz the parsers of untrusted input: data URLs + bounded gzip, kernel argument splitting and diffing,
# registries.conf comparison, MachineConfig/Ignition parsing.
#
#   scripts/fuzz.sh                      a short run of every target (CI: FUZZ_SECONDS=15 each)
#   FUZZ_SECONDS=3600 scripts/fuzz.sh    a long run
#   scripts/fuzz.sh kargs                one target
#   scripts/fuzz.sh --self-test          prove the gate fails: a planted crash and a run of 0 inputs
#
# cargo-fuzz needs nightly-only -Z flags; this machine has only the stable toolchain, so RUSTC_BOOTSTRAP=1
# lets stable accept them.
#
# A target fails the run when libFuzzer exits non-zero, when it leaves any file in fuzz/artifacts/<target>/
# (crash, oom, timeout, leak, …), or when it executed 0 inputs (a build or flag problem that fuzzed
# nothing must not pass as "no finding"). Every target runs; the run fails at the end if any failed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
self="$here/$(basename "$0")"
cd "$here/../fuzz"

if [ "${1:-}" = "--self-test" ]; then
  # The planted crash: a target that panics on its own seed. The gate must fail and name the artifact.
  rm -rf artifacts/planted_crash corpus/planted_crash
  if out=$(FUZZ_SECONDS=5 MCD_SWEEP_DIR=$(mktemp -d) "$self" planted_crash 2>&1); then
    echo "$out"
    echo "fuzz self-test: a planted crash passed the gate" >&2
    exit 1
  fi
  grep -q "planted_crash found a failing input" <<<"$out" || {
    echo "$out"
    echo "fuzz self-test: the planted crash failed the run without naming the artifact" >&2
    exit 1
  }
  rm -rf artifacts/planted_crash corpus/planted_crash
  # A run that executes nothing must fail too: -help=1 makes libFuzzer print its flags and exit 0.
  if out=$(FUZZ_SECONDS=5 FUZZ_LIBFUZZER_ARGS="-help=1" MCD_SWEEP_DIR=$(mktemp -d) "$self" kargs 2>&1); then
    echo "$out"
    echo "fuzz self-test: a run of 0 inputs passed the gate" >&2
    exit 1
  fi
  grep -q "kargs executed 0 inputs" <<<"$out" || {
    echo "$out"
    echo "fuzz self-test: the run of 0 inputs failed without saying so" >&2
    exit 1
  }
  echo "fuzz self-test: the planted crash and the run of 0 inputs both fail the gate"
  exit 0
fi

seconds=${FUZZ_SECONDS:-15}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(dataurl kargs registries machineconfig)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
# --dev: a debug build with sanitizers compiles in well under a minute; long runs may prefer release.
mode=${FUZZ_MODE:---dev}
# Extra libFuzzer flags (the self-test uses -help=1).
read -r -a extra <<<"${FUZZ_LIBFUZZER_ARGS:-}"
cargo fuzz build $mode
total_runs=0
failed=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "seeds/$t"
  echo "fuzz: $t for ${seconds}s"
  log=$(mktemp)
  status=0
  cargo fuzz run $mode "$t" "corpus/$t" "seeds/$t" -- -max_total_time="$seconds" -rss_limit_mb=2048 \
    -max_len=65536 "${extra[@]}" >"$log" 2>&1 || status=$?
  grep -E "^(#[0-9]+\s+DONE|Done|==|SUMMARY|thread|panicked|artifact_prefix|Test unit written)" "$log" || true
  # "#123 DONE" on a normal end, "Done 123 runs" with -runs; the last one counts.
  runs=$(sed -n -e 's/^#\([0-9]*\)[[:space:]]*DONE.*/\1/p' -e 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -1)
  artifacts=$(find "artifacts/$t" -type f 2>/dev/null || true)
  if [ "$status" -ne 0 ]; then
    tail -n 30 "$log" >&2
    echo "fuzz: $t: cargo fuzz run exited with status $status" >&2
    failed+=("$t")
  fi
  if [ -n "$artifacts" ]; then
    echo "fuzz: $t found a failing input in fuzz/artifacts/$t/:" >&2
    echo "$artifacts" >&2
    failed+=("$t")
  fi
  if [ "${runs:-0}" -eq 0 ]; then
    echo "fuzz: $t executed 0 inputs (no \"DONE\" line with a count): nothing was fuzzed" >&2
    failed+=("$t")
  fi
  rm -f "$log"
  total_runs=$((total_runs + ${runs:-0}))
done
if [ ${#failed[@]} -gt 0 ]; then
  mapfile -t failed < <(printf '%s\n' "${failed[@]}" | sort -u)
  echo "fuzz: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: all targets ran ${seconds}s without a finding ($total_runs inputs)"
# The reliability sweep's record (testbed sweep-report prints it).
sweep=${MCD_SWEEP_DIR:-$PWD/../target/reliability}
mkdir -p "$sweep"
printf '{"part":"fuzz","cases":%d,"summary":"%s"}\n' "$total_runs" \
  "${#targets[@]} cargo-fuzz targets (${targets[*]}), ${seconds} s each: no crash, leak or timeout" \
  >"$sweep/fuzz.json"
