#!/usr/bin/env bash
# nand.ubi for the A1's SPI-NAND from BINARIES_DIR ($1): rootfs.squashfs (both
# slots), uImage (both kernel volumes, if present), boot.scr (if present).
# Flash geometry: OXINVR_NAND_PEB (default 128KiB), OXINVR_NAND_PAGE (2048).
set -euo pipefail
bin=$1
board=$(cd "$(dirname "$0")" && pwd)
peb=${OXINVR_NAND_PEB:-128KiB} page=${OXINVR_NAND_PAGE:-2048}
sq=$(stat -c %s "$bin/rootfs.squashfs")
((sq <= 40 * 1048576)) || { echo "mk-nand: rootfs.squashfs ($sq bytes) exceeds the 40 MiB volume" >&2; exit 1; }
cfg=$bin/ubinize.cfg
cp "$board/ubinize.cfg" "$cfg"
for f in uImage boot.scr; do
    [[ -f $bin/$f ]] || sed -i "/^image=${f//./\\.}\$/d" "$cfg"
done
(cd "$bin" && ubinize -o nand.ubi -p "$peb" -m "$page" -s "$page" ubinize.cfg)
