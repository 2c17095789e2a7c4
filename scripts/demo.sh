#!/usr/bin/env bash
# Demo: what would rolling these MachineConfigs do to a worker node?
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/machine-config-daemon
ex=examples
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "rendered-worker-1 -> rendered-worker-2: a second SSH key and a digest-only registry mirror"
$bin plan --current $ex/rendered-worker-1.yaml --desired $ex/rendered-worker-2.yaml --policy $ex/machineconfiguration-cluster.yaml

say "rendered-worker-2 -> rendered-worker-3: a layered OS image by digest, a kernel argument, chrony"
$bin plan --current $ex/rendered-worker-2.yaml --desired $ex/rendered-worker-3.yaml --policy $ex/machineconfiguration-cluster.yaml

say "the same, when the node already booted the layered image"
$bin plan --current $ex/rendered-worker-2.yaml --desired $ex/rendered-worker-3.yaml \
  --booted-image quay.io/example/custom-worker-os@sha256:9a8b7c6d5e4f30211f2e3d4c5b6a79881726354453627180a9b8c7d6e5f40312

say "an unreconcilable change (exit code 3)"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
sed 's/^spec:/spec:\n  fips: true/' $ex/rendered-worker-1.yaml > "$tmp/fips.yaml"
$bin plan --current $ex/rendered-worker-1.yaml --desired "$tmp/fips.yaml" || echo "(exit code $?)"
