#!/usr/bin/env bash
# packaging/build-packages.sh [OUTDIR]   (default: target/packages)
#
# Builds the two packages of machine-config-daemon from this workspace:
#   machine-config-daemon-VERSION-1.ARCH.rpm     rpmbuild -bb packaging/machine-config-daemon.spec
#   machine-config-daemon_VERSION-1_ARCH.deb     dpkg-deb, for Debian ostree nodes
# Both contain the release binary (the same `cargo build --release` vm-tests/run uses, so `make test`
# builds it once), the units, presets, tmpfiles entry, environment file, man pages and completions
# (docgen), and the RBAC manifests. The .deb also carries the sshd line Debian needs for
# authorized_keys.d/ignition. packaging/test-packages.sh installs both into temporary roots and checks
# what lands. Needs rpm (rpmbuild), dpkg-dev and systemd (packaging/setup-dev.sh installs them).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
out=$(realpath -m "${1:-target/packages}")
die() { echo "build-packages: $*" >&2; exit 1; }
for tool in rpmbuild dpkg-deb dpkg-shlibdeps gzip cargo; do
  command -v "$tool" >/dev/null || die "$tool not found (packaging/setup-dev.sh installs it)"
done

spec=packaging/machine-config-daemon.spec
version=$(sed -n 's/^Version: *//p' "$spec")
crate_version=$(sed -n '/^\[package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
[ "$version" = "$crate_version" ] || die "the spec's Version ($version) differs from Cargo.toml's ($crate_version)"
target=${CARGO_TARGET_DIR:-$repo/target}

echo "build-packages: building the daemon (release) and docgen" >&2
cargo build -q --release -p machine-config-daemon --bin machine-config-daemon
cargo build -q -p docgen --bin docgen
work=$(mktemp -d /tmp/mcd-packages.XXXXXX)
trap 'rm -rf "$work"' EXIT
prebuilt=$work/prebuilt
mkdir -p "$prebuilt" "$out"
install -m 0755 "$target/release/machine-config-daemon" "$prebuilt/"
# Reproducible pages: dated by the last commit (a clean clone has one), as a distribution build would.
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)} \
  "$target/debug/docgen" "$prebuilt/docgen" >/dev/null

# ---- RPM -------------------------------------------------------------------------------------------
top=$work/rpmbuild
mkdir -p "$top/SOURCES"
# Source0 holds what %install takes from the tree; with `prebuilt` the vendored crates are unused.
tar czf "$top/SOURCES/machine-config-daemon-$version.tar.gz" \
  --transform "s,^,machine-config-daemon-$version/," README.md docs systemd packaging
tar czf "$top/SOURCES/machine-config-daemon-$version-vendor.tar.gz" --files-from /dev/null
rpm_args=(--define "_topdir $top" --define "prebuilt $prebuilt")
if [ -z "$(rpm --eval '%{?_unitdir}')" ]; then
  rpm_args+=(--load packaging/rpm-macros-debian)
fi
# --nodeps: BuildRequires name Fedora packages, which a Debian rpm database does not list.
rpmbuild -bb --nodeps "${rpm_args[@]}" "$spec" >"$work/rpmbuild.log" 2>&1 \
  || { cat "$work/rpmbuild.log" >&2; die "rpmbuild failed"; }
rm -f "$out"/machine-config-daemon-*.rpm
cp "$top"/RPMS/*/machine-config-daemon-"$version"-1*.rpm "$out/"

# ---- Debian package ---------------------------------------------------------------------------------
deb=$work/deb
arch=$(dpkg --print-architecture)
install -D -m 0755 "$prebuilt/machine-config-daemon" "$deb/usr/bin/machine-config-daemon"
# Debian 12 keeps packaged units in /lib (merged with /usr/lib on installed systems).
for unit in machine-config-daemon.service machine-config-daemon-firstboot.service firstboot-osupdate.target; do
  install -D -m 0644 "systemd/$unit" "$deb/lib/systemd/system/$unit"
done
install -D -m 0644 systemd/80-machine-config-daemon.preset "$deb/lib/systemd/system-preset/80-machine-config-daemon.preset"
install -D -m 0644 systemd/machine-config-daemon.tmpfiles.conf "$deb/usr/lib/tmpfiles.d/machine-config-daemon.conf"
install -D -m 0644 systemd/machine-config-daemon.sysconfig "$deb/etc/default/machine-config-daemon"
install -D -m 0644 packaging/debian/sshd-authorized-keys.conf "$deb/etc/ssh/sshd_config.d/50-machine-config-daemon.conf"
install -d -m 0700 "$deb/etc/machine-config-daemon"
install -d -m 0755 "$deb/usr/share/man/man8"
for page in "$prebuilt"/docgen/man8/*.8; do
  gzip -9n <"$page" >"$deb/usr/share/man/man8/$(basename "$page").gz"
done
install -D -m 0644 "$prebuilt/docgen/completions/machine-config-daemon.bash" "$deb/usr/share/bash-completion/completions/machine-config-daemon"
install -D -m 0644 "$prebuilt/docgen/completions/_machine-config-daemon" "$deb/usr/share/zsh/vendor-completions/_machine-config-daemon"
install -D -m 0644 "$prebuilt/docgen/completions/machine-config-daemon.fish" "$deb/usr/share/fish/vendor_completions.d/machine-config-daemon.fish"
install -D -m 0644 -t "$deb/usr/share/machine-config-daemon/manifests" packaging/manifests/*.yaml
install -D -m 0644 -t "$deb/usr/share/machine-config-daemon/manifests/examples" packaging/manifests/examples/*.yaml
install -D -m 0644 README.md "$deb/usr/share/doc/machine-config-daemon/README.md"
install -D -m 0644 docs/protocol.md "$deb/usr/share/doc/machine-config-daemon/protocol.md"
install -D -m 0644 packaging/debian/copyright "$deb/usr/share/doc/machine-config-daemon/copyright"
# Library dependencies as dpkg-shlibdeps finds them (it wants a debian/control to read).
mkdir -p "$work/shlibs/debian"
printf 'Source: machine-config-daemon\n\nPackage: machine-config-daemon\nArchitecture: any\n' >"$work/shlibs/debian/control"
depends=$(cd "$work/shlibs" && dpkg-shlibdeps -O -e "$deb/usr/bin/machine-config-daemon" 2>/dev/null \
  | sed -n 's/^shlibs:Depends=//p')
[ -n "$depends" ] || die "dpkg-shlibdeps found no library dependencies"
size=$(du -sk --exclude=DEBIAN "$deb" | cut -f1)
install -d -m 0755 "$deb/DEBIAN"
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" -e "s/@DEPENDS@/$depends/" \
  packaging/debian/control.in >"$deb/DEBIAN/control"
install -m 0644 packaging/debian/conffiles "$deb/DEBIAN/conffiles"
install -m 0755 packaging/debian/postinst packaging/debian/prerm "$deb/DEBIAN/"
rm -f "$out"/machine-config-daemon_*.deb
dpkg-deb --root-owner-group -Zxz --build "$deb" "$out/machine-config-daemon_${version}-1_${arch}.deb" >/dev/null

ls -1 "$out"/machine-config-daemon*
