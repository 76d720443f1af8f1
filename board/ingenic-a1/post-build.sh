#!/usr/bin/env bash
# Buildroot BR2_ROOTFS_POST_BUILD_SCRIPT for the Ingenic A1 (TARGET_DIR is $1).
# Besides the common steps: /etc/fw_env.config (the selector state lives in the
# U-Boot environment here), and the NaN-2008 ELF flag (see below).
set -euo pipefail
target=$1
board=$(cd "$(dirname "$0")" && pwd)
"$board/../common/post-build.sh" "$target" ingenic-a1
install -D -m 0644 "$board/fw_env.config" "$target/etc/fw_env.config"

# The A1's kernel runs a NaN-2008 user space and may refuse ELFs flagged legacy-NaN.
# The image is soft-float (no FPU instruction anywhere), so the flag only matters
# to that check: set it on every soft-float MIPS ELF, as scripts/build-mips does
# for oxinvr. OXINVR_A1_NAN2008=0 skips this.
[[ ${OXINVR_A1_NAN2008:-1} == 1 ]] || exit 0
readelf=${READELF:-readelf}
command -v "$readelf" >/dev/null || readelf=mipsel-linux-gnu-readelf
find "$target" -type f -perm -u+x -o -type f -name '*.so*' | while read -r f; do
    [[ $(head -c 4 "$f" | od -An -tx1 | tr -d ' \n') == 7f454c46 ]] || continue
    "$readelf" -A "$f" 2>/dev/null | grep -q 'FP ABI: Soft float' || continue
    flags=$(od -An -tu4 -j 36 -N 4 "$f" | tr -d ' ')
    new=$((flags | 0x400))
    ((new != flags)) || continue
    printf "$(printf '\\%03o' $((new & 255)) $((new >> 8 & 255)) $((new >> 16 & 255)) $((new >> 24 & 255)))" |
        dd of="$f" bs=1 seek=36 count=4 conv=notrunc status=none
done
