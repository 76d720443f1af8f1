#!/usr/bin/env bash
# The SD image from BINARIES_DIR/rootfs.squashfs and a boot partition directory,
# with genimage and the board's genimage.cfg. Used by the boards' post-image.sh.
#   mk-sdcard.sh GENIMAGE_CFG BINARIES_DIR BOOTFS_DIR
# Environment: OXINVR_SD_SIZE (default 512M: the data partition then grows on
# first boot to fill the real card), OXINVR_SLOT_B (copy | empty).
set -euo pipefail
cfg=$1 bin=$2 bootfs=$3
export OXINVR_SD_SIZE=${OXINVR_SD_SIZE:-512M}
size=$(numfmt --from=iec "$OXINVR_SD_SIZE")
((size % 1048576 == 0 && size >= 256 * 1048576)) ||
    { echo "mk-sdcard: OXINVR_SD_SIZE must be whole MiB, at least 256M" >&2; exit 1; }
sq=$(stat -c %s "$bin/rootfs.squashfs")
((sq <= 64 * 1048576)) || { echo "mk-sdcard: rootfs.squashfs ($sq bytes) exceeds the 64 MiB slot" >&2; exit 1; }
case ${OXINVR_SLOT_B:-copy} in
    copy) export OXINVR_SLOT_B_IMAGE=rootfs.squashfs ;;
    empty) # 64 KiB of zeros: slot B holds no file system until the first update
        head -c 65536 /dev/zero >"$bin/slot-empty.img"
        export OXINVR_SLOT_B_IMAGE=slot-empty.img ;;
    *) echo "mk-sdcard: OXINVR_SLOT_B must be copy or empty" >&2; exit 1 ;;
esac
tmp=$(mktemp -d "${TMPDIR:-/tmp}/genimage.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
rm -f "$bin/sdcard.img" "$bin/boot.ext2"
genimage --config "$cfg" --rootpath "$bootfs" --inputpath "$bin" --outputpath "$bin" \
    --tmppath "$tmp/work" >"$tmp/log" 2>&1 || { cat "$tmp/log" >&2; exit 1; }
# genimage leaves the empty tail (the data partition) unallocated: give the file
# its full size (sparse).
truncate -s "$size" "$bin/sdcard.img"
