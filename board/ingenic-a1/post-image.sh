#!/usr/bin/env bash
# Buildroot BR2_ROOTFS_POST_IMAGE_SCRIPT for the Ingenic A1. In BINARIES_DIR ($1):
# rootfs.squashfs and uImage in; boot.scr, sdcard.img and nand.ubi out.
set -euo pipefail
bin=$1
board=$(cd "$(dirname "$0")" && pwd)
common=$board/../common

mkimage -A mips -O linux -T script -C none -n "oxinvr A/B boot" \
    -d "$board/boot.cmd" "$bin/boot.scr" >/dev/null

bootfs=$bin/bootfs-a1
rm -rf "$bootfs" && mkdir -p "$bootfs"
install -m 0644 "$bin/boot.scr" "$bootfs/"
"$common/mk-bootenv.sh" "$TARGET_DIR" >"$bootfs/boot.env"
if [[ -f $bin/uImage ]]; then
    install -m 0644 "$bin/uImage" "$bootfs/uImage"
else
    echo "post-image: no $bin/uImage: the SD image has no kernel" >&2
fi
"$common/mk-sdcard.sh" "$board/genimage.cfg" "$bin" "$bootfs"
"$board/mk-nand.sh" "$bin"
