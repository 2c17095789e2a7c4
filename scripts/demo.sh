#!/usr/bin/env bash
# Demo: the real daemon rolls a layered OS image and a file change to a sandbox node.
#
# Everything runs on this machine, on 127.0.0.1, in one temp dir: kube-sim (the API server simulator),
# Debian's docker-registry with OS images built from scratch, a real ostree sysroot and a node root in
# directories, and a private D-Bus with a systemd test service that records reloads and reboot requests.
# The reboot is simulated the way the end-to-end tests do it: once the daemon asks systemd to reboot, the
# daemon is stopped, the boot id changes and the daemon starts again with the sysroot's new default
# deployment standing for the booted one (`--test-only-simulated-boot`).
#
# Needs root (ostree sysroots) and a build: `make demo` builds first. BIN_DIR overrides target/release.
set -euo pipefail
cd "$(dirname "$0")/.."
bin_dir=${BIN_DIR:-target/release}
mcd=$bin_dir/machine-config-daemon
testbed=$bin_dir/testbed
kube_sim=$bin_dir/kube-sim
for b in "$mcd" "$testbed" "$kube_sim"; do
  [[ -x $b ]] || { echo "demo: $b is missing; run 'make demo' (or cargo build --workspace --release)" >&2; exit 1; }
done
[[ $EUID -eq 0 ]] || { echo "demo: run as root (it builds real ostree sysroots in a temp dir)" >&2; exit 1; }

bold=$'\033[1m'; dim=$'\033[2m'; off=$'\033[0m'
say() { printf '\n%s== %s%s\n' "$bold" "$*" "$off"; }
t0=$SECONDS
elapsed() { printf '%3ds' $((SECONDS - t0)); }

work=$(mktemp -d /tmp/mcd-demo.XXXXXX)
declare -A pids=()
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for name in "${!pids[@]}"; do kill -TERM "${pids[$name]}" 2>/dev/null || true; done
  for name in "${!pids[@]}"; do wait "${pids[$name]}" 2>/dev/null || true; done
  if [[ $rc -eq 130 ]]; then
    echo "demo: interrupted; stopped everything it started" >&2
  elif [[ $rc -ne 0 ]]; then
    echo "demo failed (exit $rc); the end of the daemon's log:" >&2
    cat "$work"/daemon-*.out "$work"/daemon-*.err 2>/dev/null | tail -n 30 >&2 || true
  fi
  if [[ -n ${KEEP:-} ]]; then
    echo "kept $work"
  else
    # ostree makes deployment roots immutable.
    chattr -i "$work"/sysroot/ostree/deploy/*/deploy/* 2>/dev/null || true
    rm -rf "$work"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# bg NAME CMD…: run in the background, stdout to $work/NAME.out, stderr to $work/NAME.err.
bg() {
  local name=$1; shift
  : >"$work/$name.out"
  "$@" >"$work/$name.out" 2>"$work/$name.err" &
  pids[$name]=$!
}
# first_line NAME: wait (10 s) for the first line a background process prints.
first_line() {
  local name=$1
  for _ in $(seq 100); do
    if [[ -s $work/$name.out ]]; then head -n1 "$work/$name.out"; return; fi
    kill -0 "${pids[$name]}" 2>/dev/null || break
    sleep 0.1
  done
  echo "demo: $name did not start: $(cat "$work/$name.err")" >&2
  return 1
}

say "starting kube-sim, a registry and a private D-Bus with a systemd test service"
# TechPreviewNoUpgrade: the MachineConfigNode CRD with the image-mode status fields.
bg kube-sim "$kube_sim" --port 0 --kubeconfig "$work/kubeconfig" --feature-set TechPreviewNoUpgrade
api=$(first_line kube-sim)
bg registry "$testbed" registry --dir "$work/registry"
registry=$(first_line registry)
bg systemd "$testbed" fake-systemd --dir "$work/systemd"
bus=$(first_line systemd)
k() { kubectl --kubeconfig "$work/kubeconfig" "$@"; }
echo "API server $api, registry $registry, system bus ${bus%%,*}"

say "building OS images from scratch and pushing them"
"$testbed" build-base --lab "$work/lab" --tag base --version 9.6.20250101 --file usr/etc/motd="base image" >/dev/null
"$testbed" derive --lab "$work/lab" --from base --to custom --version 9.6.20250101-custom \
  --file usr/bin/node-agent='#!/bin/sh' --file usr/lib/node-agent/version=1.4.2 >/dev/null
base=$("$testbed" push --lab "$work/lab" --tag base --registry "$registry")
custom=$("$testbed" push --lab "$work/lab" --tag custom --registry "$registry")
echo "base:   $base"
echo "custom: $custom (base + a layer with a node agent)"

say "installing the node: a sandbox ostree sysroot and node root at rendered-worker-1"
"$testbed" sysroot --dir "$work/sysroot" >/dev/null
"$testbed" node-root --dir "$work/node" --registry "$registry" >/dev/null
b64() { printf '%s' "$1" | base64 -w0; }
machineconfig() { # NAME IMAGE AGENT_CONF
  cat <<EOF
apiVersion: machineconfiguration.openshift.io/v1
kind: MachineConfig
metadata:
  name: $1
spec:
  osImageURL: $2
  config:
    ignition: {version: 3.4.0}
    passwd:
      users:
      - name: core
        sshAuthorizedKeys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHm0pUq1yBQ3KJtGx1QWl9n2n5vTq8b0yE0gR7bq1Xj4 admin@bastion"]
    storage:
      files:
      - path: /etc/node-agent.conf
        mode: 420
        contents: {source: "data:text/plain;base64,$(b64 "$3")"}
EOF
}
machineconfig rendered-worker-1 "$base" $'enabled = false\n' >"$work/rendered-worker-1.yaml"
machineconfig rendered-worker-2 "$custom" $'enabled = true\ninterval = "30s"\n' >"$work/rendered-worker-2.yaml"
"$mcd" apply --root "$work/node" --sysroot "$work/sysroot" --desired "$work/rendered-worker-1.yaml" >/dev/null
echo "boot-1" >"$work/boot_id"
cat >"$work/node.yaml" <<EOF
apiVersion: v1
kind: Node
metadata:
  name: worker-0
  labels: {node-role.kubernetes.io/worker: ""}
  annotations:
    machineconfiguration.openshift.io/currentConfig: rendered-worker-1
    machineconfiguration.openshift.io/desiredConfig: rendered-worker-1
    machineconfiguration.openshift.io/state: Done
status:
  conditions: [{type: Ready, status: "True"}]
EOF
k create --validate=false -f "$work/node.yaml" -f "$work/rendered-worker-1.yaml" -f "$work/rendered-worker-2.yaml" >/dev/null
k get node worker-0

start_daemon() {
  bg "daemon-$1" env DBUS_SYSTEM_BUS_ADDRESS="$bus" MCD_LOG=info \
    "$mcd" start --node-name worker-0 --kubeconfig "$work/kubeconfig" --root "$work/node" \
    --sysroot "$work/sysroot" --metrics-listen 127.0.0.1:0 --test-only-simulated-boot "$work/boot_id"
}

say "plan: what rendered-worker-1 -> rendered-worker-2 will do"
"$mcd" plan --current "$work/rendered-worker-1.yaml" --desired "$work/rendered-worker-2.yaml"

say "starting the daemon and watching the node (kubectl get node -w)"
cols='STATE:.metadata.annotations.machineconfiguration\.openshift\.io/state'
cols+=',CURRENT:.metadata.annotations.machineconfiguration\.openshift\.io/currentConfig'
cols+=',DESIRED:.metadata.annotations.machineconfiguration\.openshift\.io/desiredConfig'
cols+=',UNSCHEDULABLE:.spec.unschedulable'
cols+=',POST-ACTION:.metadata.annotations.machineconfiguration\.openshift\.io/post-config-action'
cols+=',REASON:.metadata.annotations.machineconfiguration\.openshift\.io/reason'
bg watch kubectl --kubeconfig "$work/kubeconfig" get node worker-0 -w -o "custom-columns=$cols"
# Print each distinct row with the time since the demo started (tail ends when kubectl does).
(
  last=''
  tail -n +1 -f --pid="${pids[watch]}" "$work/watch.out" | while read -r st cur des unsched post reason; do
    row=$(printf '%-8s %-18s %-18s %-14s %-12s %s' "$st" "$cur" "$des" "${unsched/<none>/false}" \
      "${post/<none>/}" "${reason/<none>/}")
    [[ $row == "$last" ]] && continue
    last=$row
    if [[ $st == STATE ]]; then printf '%s           %s\n' "$bold" "$row$off"; else
      printf '%s[watch %s]%s %s\n' "$dim" "$(elapsed)" "$off" "$row"; fi
  done
) &
pids[printer]=$!
start_daemon 1
sleep 1

say "rolling rendered-worker-2 (layered image by digest + a file) to the node"
# As the MCO controller does for on-cluster layering: the desired config and the built image.
k annotate node worker-0 --overwrite machineconfiguration.openshift.io/desiredConfig=rendered-worker-2 \
  "machineconfiguration.openshift.io/desiredImage=$custom" >/dev/null
for _ in $(seq 600); do
  grep -q 'machine-config-daemon-reboot' "$work/systemd/calls.log" 2>/dev/null && break
  kill -0 "${pids[daemon-1]}" 2>/dev/null || { echo "demo: the daemon exited" >&2; exit 1; }
  sleep 0.1
done
grep -q 'machine-config-daemon-reboot' "$work/systemd/calls.log" || { echo "demo: no reboot request within 60 s" >&2; exit 1; }
sleep 0.3

say "the daemon asked systemd to reboot — SIMULATED: stop it, new boot id, start it again"
why=$(grep -m1 machine-config-daemon-reboot "$work/systemd/calls.log" | sed -n 's/.*Description=\(.*\) ExecStart=.*/\1/p')
echo "systemd was asked to start machine-config-daemon-reboot.service running 'systemctl reboot' ($why)"
echo "files were written before the reboot: /etc/node-agent.conf = $(tr '\n' ' ' <"$work/node/etc/node-agent.conf")"
kill -TERM "${pids[daemon-1]}"; wait "${pids[daemon-1]}" 2>/dev/null || true; unset 'pids[daemon-1]'
echo "boot-2" >"$work/boot_id"
start_daemon 2

for _ in $(seq 600); do
  state=$(k get node worker-0 -o jsonpath='{.metadata.annotations.machineconfiguration\.openshift\.io/state}/{.metadata.annotations.machineconfiguration\.openshift\.io/currentConfig}')
  [[ $state == Done/rendered-worker-2 ]] && break
  sleep 0.1
done
[[ $state == Done/rendered-worker-2 ]] || { echo "demo: not Done within 60 s ($state)" >&2; exit 1; }
sleep 0.5

say "done in $(elapsed): what an admin sees"
k get events --field-selector involvedObject.name=worker-0 -o custom-columns=REASON:.reason,MESSAGE:.message | cut -c1-150
echo
echo "MachineConfigNode conditions that are True:"
k get machineconfignode worker-0 -o jsonpath='{range .status.conditions[?(@.status=="True")]}  {.type}: {.message}{"\n"}{end}'
echo
echo "The MachineConfigNode's spec and status (kubectl get machineconfignode worker-0 -o yaml; conditions below):"
k get machineconfignode worker-0 -o yaml | sed -n '/^spec:/,$p' \
  | awk '/^  conditions:/ {skip=1; print "  conditions: [...]"; next} skip && /^  [a-zA-Z]/ {skip=0} !skip' | cut -c1-150
echo "Its conditions (after Updated=True the others read \"Action during update to …\"):"
k get machineconfignode worker-0 -o jsonpath='{range .status.conditions[*]}  {.type}={.status} ({.reason}): {.message}{"\n"}{end}' | cut -c1-150
echo
echo "The sysroot's deployments (a sandbox: nothing is booted from it for real; Pending is what the"
echo "simulated boot runs, Rollback the previous deployment, kept):"
"$mcd" status --sysroot "$work/sysroot"
echo "/etc/node-agent.conf on the node: $(tr '\n' ' ' <"$work/node/etc/node-agent.conf")"
echo "reboot requests: $(grep -c machine-config-daemon-reboot "$work/systemd/calls.log") (simulated)"
