#!/usr/bin/env bash
# Fuzz the parsers of untrusted input: data URLs + bounded gzip, kernel argument splitting and diffing,
# registries.conf comparison, MachineConfig/Ignition parsing.
#
#   scripts/fuzz.sh                      a short run of every target (CI: FUZZ_SECONDS=15 each)
#   FUZZ_SECONDS=3600 scripts/fuzz.sh    a long run
#   scripts/fuzz.sh kargs                one target
#
# cargo-fuzz needs nightly-only -Z flags; this machine has only the stable toolchain, so RUSTC_BOOTSTRAP=1
# lets stable accept them. Crashes land in fuzz/artifacts/<target>/ and fail the run.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${FUZZ_SECONDS:-15}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(dataurl kargs registries machineconfig)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
# --dev: a debug build with sanitizers compiles in well under a minute; long runs may prefer release.
mode=${FUZZ_MODE:---dev}
cargo fuzz build $mode
total_runs=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "fuzz: $t for ${seconds}s"
  out=$(cargo fuzz run $mode "$t" "corpus/$t" "seeds/$t" -- -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 2>&1 \
    | grep -E "^(#[0-9]+\s+DONE|Done|==|SUMMARY|thread|panicked|artifact_prefix|Test unit written)" || true)
  [ -z "$out" ] || echo "$out"
  runs=$(sed -n 's/^#\([0-9]*\)[[:space:]]*DONE.*/\1/p' <<<"$out" | tail -1)
  total_runs=$((total_runs + ${runs:-0}))
  if ls artifacts/"$t"/crash-* artifacts/"$t"/oom-* artifacts/"$t"/timeout-* >/dev/null 2>&1; then
    echo "fuzz: $t found a failing input in fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
echo "fuzz: all targets ran ${seconds}s without a finding ($total_runs inputs)"
# The reliability sweep's record (testbed sweep-report prints it).
sweep=${MCD_SWEEP_DIR:-$PWD/../target/reliability}
mkdir -p "$sweep"
printf '{"part":"fuzz","cases":%d,"summary":"%s"}\n' "$total_runs" \
  "${#targets[@]} cargo-fuzz targets (${targets[*]}), ${seconds} s each: no crash, leak or timeout" \
  >"$sweep/fuzz.json"
