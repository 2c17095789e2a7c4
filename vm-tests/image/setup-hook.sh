#!/bin/sh
# mmdebstrap --setup-hook: runs before any package is installed, so the kernel's postinst builds the
# initramfs with this configuration (a generic initramfs: the build host is not the guest).
set -eu
root="$1"
mkdir -p "$root/etc/dracut.conf.d"
cat > "$root/etc/dracut.conf.d/10-vmtest.conf" <<'CONF'
hostonly="no"
drivers+=" virtio_pci virtio_blk virtio_console virtio_net ext4 overlay "
compress="gzip"
CONF
