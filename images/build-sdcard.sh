#!/bin/sh
# Assemble a bootable Raspberry Pi SD card image from a root filesystem made
# by build-rootfs.sh (a directory). Rootless: the partition table, the FAT
# boot partition (mtools) and the ext4 root (mke2fs -d) are written into a
# plain file with fixed ids and SOURCE_DATE_EPOCH file times. The boot
# partition is bit-for-bit reproducible; the ext4 root is not yet (mke2fs
# 1.47.0 stamps inodes and the superblock with the current time; 1.47.1+
# honours SOURCE_DATE_EPOCH), so compare root trees, not image hashes.
#
#   images/build-sdcard.sh ROOTFS_DIR OUTPUT.img
#
# Layout (GPT): p1 KESP-BOOT (FAT32, 256 MiB, "Microsoft basic data", the
# Pi's /boot/firmware: firmware, kernel, config.txt, cmdline.txt), p2
# kesp-root (ext4, "Linux root (ARM-64)", mounted read-only). The state
# partition p3 (kesp-state) is appended on the card by the first boot
# (systemd-repart, images/files/repart.d), so the image stays small and the
# partition fills whatever card is used.
#
# Why GPT and not MBR: systemd-repart only edits GPT disks (on an MBR card it
# says "has no GPT disk label, not repartitioning" and exits 77, and the
# first boot would never create the state partition); it also moves GPT's
# backup header to the end of a card larger than the image. The Pi 4 and Pi 5
# boot loaders (EEPROM 2020-05-26 and later) boot from GPT when the boot
# partition is FAT with the basic-data (or EFI) type. A Pi 3 would need MBR.
#
# Needs: sfdisk (fdisk), mkfs.vfat (dosfstools), mcopy (mtools), mke2fs >= 1.43.
set -eu
rootfs=${1:?usage: build-sdcard.sh ROOTFS_DIR OUTPUT.img}
out=${2:?usage: build-sdcard.sh ROOTFS_DIR OUTPUT.img}
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-0}
export SOURCE_DATE_EPOCH E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH
boot_mib=256
root_mib=$(( $(du -sm --exclude=./boot/firmware "$rootfs" | cut -f1) * 13 / 10 + 64 ))
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Boot partition: what raspi-firmware installed, and the kernel command line
# pointing at the read-only root by label.
mkdir -p "$work/boot"
if [ -d "$rootfs/boot/firmware" ]; then cp -a "$rootfs/boot/firmware/." "$work/boot/"; fi
printf 'console=tty1 root=LABEL=kesp-root rootfstype=ext4 ro fsck.repair=yes rootwait quiet\n' \
    > "$work/boot/cmdline.txt"
[ -e "$work/boot/config.txt" ] || printf 'arm_64bit=1\nenable_uart=1\n' > "$work/boot/config.txt"
find "$work/boot" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
truncate -s "${boot_mib}M" "$work/boot.img"
mkfs.vfat -F 32 -n KESP-BOOT -i 4b455350 --invariant "$work/boot.img" >/dev/null
( cd "$work/boot" && find . -mindepth 1 -maxdepth 1 | LC_ALL=C sort |
    while read -r f; do mcopy -s -p -m -i "$work/boot.img" "$f" ::/; done )

# Root partition, populated from the directory without mounting anything.
truncate -s "${root_mib}M" "$work/root.img"
mke2fs -q -t ext4 -L kesp-root -U 4b455350-0000-4000-8000-726f6f746673 \
    -E hash_seed=4b455350-0000-4000-8000-000000000000 -d "$rootfs" "$work/root.img"

# The card: GPT with fixed disk and partition ids, boot then root. The 1 MiB
# tail holds GPT's backup header.
total=$(( 4 + boot_mib + root_mib + 1 ))
truncate -s 0 "$out"
truncate -s "${total}M" "$out"
sfdisk --quiet "$out" <<TABLE
label: gpt
label-id: 4B455350-0000-4000-8000-6469736B0000
start=4MiB, size=${boot_mib}MiB, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, uuid=4B455350-0000-4000-8000-626F6F740000, name=KESP-BOOT
start=$(( 4 + boot_mib ))MiB, size=${root_mib}MiB, type=B921B045-1DF0-41C3-AF44-4C6F280D3FAE, uuid=4B455350-0000-4000-8000-726F6F740000, name=kesp-root
TABLE
dd if="$work/boot.img" of="$out" bs=1M seek=4 conv=notrunc status=none
dd if="$work/root.img" of="$out" bs=1M seek=$(( 4 + boot_mib )) conv=notrunc status=none
echo "wrote $out: boot ${boot_mib} MiB, root ${root_mib} MiB; sha256 $(sha256sum "$out" | cut -d' ' -f1)"
