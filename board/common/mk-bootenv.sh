#!/bin/sh
# Prints the factory boot.env: both slots with 3 tries, and the version of the
# image in them (slot B holds a copy of A unless OXINVR_SLOT_B=empty).
#   mk-bootenv.sh TARGET_DIR
set -eu
v=$(sed -n 's/^OXINVR_VERSION=//p' "$1/etc/oxinvr-release" 2>/dev/null || true)
tmpl=$(dirname "$0")/boot.env
# An empty slot B gets no tries: nothing to fall back to.
if [ "${OXINVR_SLOT_B:-copy}" = copy ]; then
    head -n 3 "$tmpl"
else
    head -n 3 "$tmpl" | sed 's/^BOOT_B_LEFT=.*/BOOT_B_LEFT=0/'
fi
if [ -n "$v" ]; then
    echo "OXINVR_A_VERSION=$v"
    [ "${OXINVR_SLOT_B:-copy}" = copy ] && echo "OXINVR_B_VERSION=$v"
fi
tail -n +4 "$tmpl"
