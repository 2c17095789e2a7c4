#!/usr/bin/env bash
# packaging/test-packages.sh [DIR]   (default: target/packages, what build-packages.sh wrote)
#
# Installs the RPM (`rpm --root`) and the Debian package (`dpkg --root`) into temporary roots and checks
# what an admin relies on: the binary runs, the units, preset, tmpfiles entry, environment file, man
# pages, completions and manifests are where the docs say; the state directory is 0700; enabling by
# preset (the RPM's %post, the .deb's postinst) leaves the daemon and the first-boot units enabled;
# the .deb's sshd line is a conffile; removal takes the files away. Nothing outside the temporary roots
# is touched: rpm runs no scriptlets (it would chroot into a root without a shell), so %post's preset
# is run the same way here and the scriptlet's text is checked; dpkg runs the .deb's scripts outside
# the root with DPKG_ROOT set, which they honour.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=$(realpath -m "${1:-$repo/target/packages}")
fail() { echo "test-packages: FAIL: $*" >&2; exit 1; }
ok() { echo "test-packages: ok: $*"; }
version=$(sed -n 's/^Version: *//p' "$repo/packaging/machine-config-daemon.spec")
rpm_file=$(ls "$dir"/machine-config-daemon-"$version"-1*.rpm 2>/dev/null | head -n1)
deb_file=$(ls "$dir"/machine-config-daemon_"$version"-1_*.deb 2>/dev/null | head -n1)
[ -n "$rpm_file" ] && [ -n "$deb_file" ] || fail "no packages in $dir (run packaging/build-packages.sh)"
units=(machine-config-daemon.service machine-config-daemon-firstboot.service firstboot-osupdate.target)
roots=()
cleanup() { for r in "${roots[@]}"; do rm -rf "$r"; done; }
trap cleanup EXIT

# Checks shared by both packages. $1: root, $2: unit directory, $3: preset directory,
# $4: environment file, $5: man page suffix.
check_installed() {
  local root=$1 unitdir=$2 presetdir=$3 envfile=$4 man=$5
  [ -x "$root/usr/bin/machine-config-daemon" ] || fail "no /usr/bin/machine-config-daemon"
  local v
  v=$("$root/usr/bin/machine-config-daemon" --version)
  [ "$v" = "machine-config-daemon $version" ] || fail "--version says '$v'"
  for u in "${units[@]}"; do
    [ -f "$root$unitdir/$u" ] || fail "unit $unitdir/$u missing"
    cmp -s "$root$unitdir/$u" "$repo/systemd/$u" || fail "$u differs from systemd/$u"
  done
  cmp -s "$root$presetdir/80-machine-config-daemon.preset" "$repo/systemd/80-machine-config-daemon.preset" \
    || fail "preset file missing or different"
  cmp -s "$root/usr/lib/tmpfiles.d/machine-config-daemon.conf" "$repo/systemd/machine-config-daemon.tmpfiles.conf" \
    || fail "tmpfiles entry missing or different"
  cmp -s "$root$envfile" "$repo/systemd/machine-config-daemon.sysconfig" || fail "$envfile missing or different"
  [ "$(stat -c %a "$root/etc/machine-config-daemon")" = 700 ] || fail "/etc/machine-config-daemon is not 0700"
  for page in machine-config-daemon machine-config-daemon-plan machine-config-daemon-apply \
    machine-config-daemon-validate machine-config-daemon-status machine-config-daemon-start \
    machine-config-daemon-firstboot-complete-machineconfig; do
    [ -f "$root/usr/share/man/man8/$page.8$man" ] || fail "man page $page.8$man missing"
  done
  [ -f "$root/usr/share/machine-config-daemon/manifests/rbac-roles.yaml" ] || fail "RBAC manifests missing"
  [ -f "$root/usr/share/doc/machine-config-daemon/protocol.md" ] || fail "docs/protocol.md missing"
  [ -f "$root/usr/share/machine-config-daemon/manifests/examples/daemonset.yaml" ] || fail "DaemonSet example missing"
  # Enabled by preset: the daemon by multi-user.target, first boot through its target.
  systemctl --root="$root" preset "${units[@]}" >/dev/null 2>&1 || fail "systemctl preset failed"
  for link in multi-user.target.wants/machine-config-daemon.service \
    multi-user.target.wants/firstboot-osupdate.target \
    firstboot-osupdate.target.requires/machine-config-daemon-firstboot.service; do
    [ -L "$root/etc/systemd/system/$link" ] || fail "preset did not enable $link"
  done
}

# ---- RPM --------------------------------------------------------------------------------------------
root=$(mktemp -d /tmp/mcd-rpmroot.XXXXXX); roots+=("$root")
rpm --root "$root" --initdb
# Output goes to a log shown on failure: Debian's rpm warns on every install, and an empty root
# satisfies no dependency.
log=$root.log; roots+=("$log")
rpm --root "$root" -i --nodeps --noscripts "$rpm_file" >"$log" 2>&1 || { cat "$log" >&2; fail "rpm -i failed"; }
check_installed "$root" /usr/lib/systemd/system /usr/lib/systemd/system-preset \
  /etc/sysconfig/machine-config-daemon ""
[ -f "$root/usr/share/bash-completion/completions/machine-config-daemon" ] || fail "RPM: bash completion missing"
verify=$(rpm --root "$root" -V --nodeps machine-config-daemon 2>&1 || true)
[ -z "$verify" ] || fail "rpm -V reports changes after install: $verify"
scripts=$(rpm -qp --scripts "$rpm_file")
grep -q "preset ${units[*]}" <<<"$scripts" || fail "RPM %post does not preset the units: $scripts"
grep -q "disable --now ${units[*]}" <<<"$scripts" || fail "RPM %preun does not disable the units"
grep -q "systemd-tmpfiles --create /usr/lib/tmpfiles.d/machine-config-daemon.conf" <<<"$scripts" \
  || fail "RPM %post does not create the state directory"
requires=$(rpm -qp --requires "$rpm_file")
for r in skopeo ostree; do grep -qx "$r" <<<"$requires" || fail "RPM does not require $r"; done
[ "$(rpm -qp --queryformat '%{VERSION}-%{RELEASE}' "$rpm_file")" = "$version-1" ] || fail "RPM version"
rpm --root "$root" -e --nodeps --noscripts machine-config-daemon >"$log" 2>&1 || { cat "$log" >&2; fail "rpm -e failed"; }
[ ! -e "$root/usr/bin/machine-config-daemon" ] || fail "rpm -e left the binary"
ok "RPM $(basename "$rpm_file"): files, units, presets, scriptlets, removal"

# ---- Debian package -----------------------------------------------------------------------------------
root=$(mktemp -d /tmp/mcd-debroot.XXXXXX); roots+=("$root")
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/var/lib/dpkg/triggers"
: >"$root/var/lib/dpkg/status"
dpkg_root=(dpkg --root="$root" --force-script-chrootless --force-depends --force-not-root)
log=$root.log; roots+=("$log")
"${dpkg_root[@]}" -i "$deb_file" >"$log" 2>&1 || { cat "$log" >&2; fail "dpkg -i failed"; }
# The postinst's preset ran (chrootless, into the root): check before check_installed presets again.
[ -L "$root/etc/systemd/system/multi-user.target.wants/machine-config-daemon.service" ] \
  || fail ".deb postinst did not enable machine-config-daemon.service"
check_installed "$root" /lib/systemd/system /lib/systemd/system-preset /etc/default/machine-config-daemon .gz
cmp -s "$root/etc/ssh/sshd_config.d/50-machine-config-daemon.conf" "$repo/packaging/debian/sshd-authorized-keys.conf" \
  || fail ".deb: the sshd AuthorizedKeysFile line is missing"
grep -qx 'AuthorizedKeysFile .ssh/authorized_keys .ssh/authorized_keys2 .ssh/authorized_keys.d/ignition' \
  "$root/etc/ssh/sshd_config.d/50-machine-config-daemon.conf" || fail ".deb: AuthorizedKeysFile line"
status=$(dpkg --root="$root" -s machine-config-daemon)
grep -q '^Status: install ok installed' <<<"$status" || fail ".deb not installed: $status"
for f in /etc/default/machine-config-daemon /etc/ssh/sshd_config.d/50-machine-config-daemon.conf; do
  grep -q "^ $f " <<<"$status" || fail ".deb: $f is not a conffile"
done
grep -q '^Depends: .*libostree-1-1' <<<"$status" || fail ".deb does not depend on libostree: $status"
"${dpkg_root[@]}" -r machine-config-daemon >"$log" 2>&1 || { cat "$log" >&2; fail "dpkg -r failed"; }
[ ! -e "$root/usr/bin/machine-config-daemon" ] || fail "dpkg -r left the binary"
[ ! -L "$root/etc/systemd/system/multi-user.target.wants/machine-config-daemon.service" ] \
  || fail ".deb prerm did not disable the units"
[ -f "$root/etc/default/machine-config-daemon" ] || fail "dpkg -r removed a conffile (only purge may)"
ok "Debian package $(basename "$deb_file"): files, units, presets, postinst/prerm, conffiles, removal"
