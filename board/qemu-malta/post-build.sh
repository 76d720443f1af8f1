#!/usr/bin/env bash
# Buildroot BR2_ROOTFS_POST_BUILD_SCRIPT for the QEMU malta board (also run by
# scripts/build-image): TARGET_DIR is $1.
set -euo pipefail
exec "$(dirname "$0")/../common/post-build.sh" "$1" qemu-malta
