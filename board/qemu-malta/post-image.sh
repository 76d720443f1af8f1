#!/usr/bin/env bash
# Buildroot BR2_ROOTFS_POST_IMAGE_SCRIPT for the QEMU malta board; scripts/build-image
# runs it the same way. In BINARIES_DIR ($1): rootfs.squashfs in, sdcard.img and
# initramfs.cpio.gz (the A/B selector) out.
# Environment: TARGET_DIR (its bin/busybox goes into the initramfs), and for a
# kernel with modular drivers OXINVR_KMOD_DIR + OXINVR_KVER (Debian's kernel: see
# scripts/build-image), OXINVR_E2FSCK (a static e2fsck for the initramfs).
set -euo pipefail
bin=$1
board=$(cd "$(dirname "$0")" && pwd)
common=$board/../common

bootfs=$bin/bootfs-qemu
rm -rf "$bootfs" && mkdir -p "$bootfs"
"$common/mk-bootenv.sh" "$TARGET_DIR" >"$bootfs/boot.env"
"$common/mk-sdcard.sh" "$board/genimage.cfg" "$bin" "$bootfs"

args=(--busybox "$TARGET_DIR/bin/busybox" --out "$bin/initramfs.cpio.gz")
[[ -n ${OXINVR_KMOD_DIR:-} ]] && args+=(--modules "$OXINVR_KMOD_DIR" --kver "$OXINVR_KVER")
[[ -n ${OXINVR_E2FSCK:-} ]] && args+=(--e2fsck "$OXINVR_E2FSCK")
"$board/mk-initramfs.sh" "${args[@]}"
