#!/usr/bin/env bash
# Root file system finishing, shared by the boards: Buildroot runs it through
# board/<board>/post-build.sh (BR2_ROOTFS_POST_BUILD_SCRIPT) after the overlay is
# copied; scripts/build-image runs it the same way on its own staging tree.
#   post-build.sh TARGET_DIR BOARD
# Environment: OXINVR_OTA_PUBKEY (the ed25519 public key OTA bundles are checked
# against; default target/keys/ota.pub of the repository), OXINVR_VERSION.
set -euo pipefail
target=$1 board=$2
common=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$(dirname "$common")")   # board/common -> the repository

# Mount points and directories the read-only root needs (git keeps no empty dirs).
mkdir -p "$target"/{proc,sys,dev,run,tmp,var,boot,root,mnt}
mkdir -p "$target"/etc/network/{if-pre-up.d,if-up.d,if-down.d,if-post-down.d}

# The board's [system] section of the default config (slot devices, board name).
# Only if the binary knows [system]: `deny_unknown_fields` refuses it otherwise.
toml=$target/etc/oxinvr/oxinvr.toml sys=$common/../$board/oxinvr-system.toml
if [[ -f $sys ]] && ! grep -q '^\[system\]' "$toml"; then
    if grep -q boot_limit "$target/usr/bin/oxinvr" 2>/dev/null; then
        { echo; cat "$sys"; } >>"$toml"
    else
        echo "post-build: $target/usr/bin/oxinvr has no [system] config yet: not adding $sys" >&2
    fi
fi

# The OTA public key (the secret half never enters the image or the repository).
pub=${OXINVR_OTA_PUBKEY:-$repo/target/keys/ota.pub}
if [[ -f $pub ]]; then
    install -D -m 0644 "$pub" "$target/etc/oxinvr/ota.pub"
else
    echo "post-build: no OTA public key ($pub): the image will refuse every bundle" >&2
fi

version=${OXINVR_VERSION:-$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -1)}
rev=$(git -C "$repo" describe --always --dirty 2>/dev/null || echo unknown)
cat >"$target/etc/oxinvr-release" <<REL
OXINVR_VERSION=$version
OXINVR_BOARD=$board
OXINVR_GIT=$rev
OXINVR_BUILD_DATE=$(date -u -d "@${SOURCE_DATE_EPOCH:-$(date +%s)}" +%Y-%m-%dT%H:%M:%SZ)
REL
