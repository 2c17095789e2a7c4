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
# Storage stacks, crypto and network boot never happen here; each module adds hooks and early-boot
# work that is slow under software emulation.
omit_dracutmodules+=" dm dmraid lvm mdraid crypt multipath nvdimm virtiofs i18n resume bcache btrfs lunmask qemu-net network network-legacy nfs iscsi nbd fcoe fcoe-uefi plymouth "
CONF

# Drivers udev would load for QEMU's emulated legacy hardware (floppy, IDE, PC speaker, SMBus) or for
# CPU features (kvm): none is used, and each costs boot time under software emulation. Written here
# so the initramfs carries the same list.
mkdir -p "$root/etc/modprobe.d"
cat > "$root/etc/modprobe.d/vmtest-blacklist.conf" <<'CONF'
blacklist floppy
blacklist pcspkr
blacklist kvm
blacklist kvm_amd
blacklist kvm_intel
blacklist powernow_k8
blacklist i2c_piix4
blacklist ata_piix
blacklist pata_acpi
blacklist ata_generic
blacklist psmouse
blacklist serio_raw
blacklist joydev
CONF
