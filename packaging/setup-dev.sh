#!/usr/bin/env bash
# Idempotent dev/CI setup for a Debian 12 (bookworm) machine: installs every apt package the build,
# the test suite, the demo and the vm-tests need. Safe to run repeatedly; does nothing when all is present.
#
#   packaging/setup-dev.sh          build + tests + demo
#   packaging/setup-dev.sh --vm     also what vm-tests need (QEMU, mmdebstrap, socat)
set -euo pipefail

want_vm=0
for arg in "$@"; do
  case "$arg" in
    --vm) want_vm=1 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "setup-dev.sh: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

# Build: libostree (ostree-ext links it), glib, openssl, zstd.
# Runtime/tests: ostree + skopeo binaries (ostree-ext spawns them), setpriv (util-linux),
# docker-registry (real registry on 127.0.0.1), dbus-daemon (private buses), e2fsprogs (debugfs).
# Packaging tests: systemd (systemd-analyze verify, systemctl preset, systemd-tmpfiles on a temp
# root; nothing is started), groff-base (renders the man pages), rpm (rpmspec parses the spec,
# rpmbuild builds it, rpm --root installs it), dpkg-dev (dpkg-shlibdeps for the Debian package;
# build-essential pulls it in too).
# Benchmarks: podman (`make bench` compares our pulls with `podman pull`).
packages=(
  build-essential pkg-config libglib2.0-dev libssl-dev libzstd-dev libostree-dev
  ostree skopeo util-linux docker-registry dbus-daemon dbus-bin e2fsprogs
  curl ca-certificates jq procps
  systemd groff-base rpm dpkg-dev
  podman
)
if [ "$want_vm" = 1 ]; then
  # qemu-system-x86 replaces a newer qemu-utils if the image has one; we do not use qemu-img.
  packages+=(qemu-system-x86 mmdebstrap socat)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
# kubectl: the machine image ships kubectl 1.32 (package `kubectl`); Debian's kubernetes-client (1.20)
# conflicts with it, so it is only a fallback when no kubectl exists at all.
if ! command -v kubectl >/dev/null 2>&1; then
  missing+=(kubernetes-client)
fi

if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup-dev.sh: installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup-dev.sh: all packages present"
fi

command -v cargo >/dev/null || { echo "setup-dev.sh: cargo not found (a Rust toolchain is required)" >&2; exit 1; }
