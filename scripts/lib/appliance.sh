# shellcheck shell=bash
# Sourced by scripts/build-image and scripts/qemu-boot: Debian mipsel packages that
# stand in for what Buildroot would build (busybox, e2fsprogs, the QEMU malta kernel).
#
#   source scripts/lib/deps.sh; source scripts/lib/appliance.sh
#   appl_setup                      # host tools + the mipsel architecture in apt
#   appl_deb DIR PKG:mipsel...      # downloads (cached) and unpacks the packages
#   appl_kernel_pkg                 # prints the current linux-image-*-4kc-malta name
#
# Downloads are cached in target/appliance/debs/ and unpacked once per version into
# target/appliance/deb/<package>/ (a stamp file holds the version).

APPL_DIR=${APPL_DIR:-target/appliance}
# Host tools: QEMU, image builders, U-Boot's mkimage, kmod's depmod, qemu-user to ask
# the mipsel busybox for its applet list.
APPL_APT=(qemu-system-mips qemu-user-static squashfs-tools mtd-utils e2fsprogs fdisk
          genimage cpio xz-utils gzip file u-boot-tools kmod python3 curl
          binutils-mipsel-linux-gnu)

_appl_sudo() { if ((EUID)); then sudo "$@"; else "$@"; fi; }

appl_setup() {
    ensure_apt "${APPL_APT[@]}"
    # Debian's mipsel packages come through apt's multiarch support.
    if ! dpkg --print-foreign-architectures | grep -qx mipsel; then
        echo "appliance: adding the mipsel architecture to dpkg" >&2
        _appl_sudo dpkg --add-architecture mipsel
    fi
    if [[ -z $(apt-cache policy busybox-static:mipsel 2>/dev/null | awk '/Candidate:/ && $2 != "(none)"') ]]; then
        echo "appliance: apt-get update (mipsel lists)" >&2
        _appl_sudo apt-get update -qq >&2
    fi
}

# appl_kernel_pkg: the linux-image package the 4kc-malta meta-package points at now
# (override with OXINVR_QEMU_KERNEL_PKG).
appl_kernel_pkg() {
    if [[ -n ${OXINVR_QEMU_KERNEL_PKG:-} ]]; then echo "$OXINVR_QEMU_KERNEL_PKG"; return; fi
    apt-cache depends linux-image-4kc-malta:mipsel 2>/dev/null |
        awk '/Depends: linux-image-[0-9]/ { sub(/:mipsel$/, "", $2); print $2; exit }'
}

# appl_deb PKG...: each PKG (name:mipsel) unpacked into $APPL_DIR/deb/<name>/.
# Prints nothing; fails if a package has no candidate.
appl_deb() {
    local p name ver dir debs=$APPL_DIR/debs
    mkdir -p "$debs"
    for p in "$@"; do
        name=${p%%:*}
        ver=$(apt-cache policy "$p" | awk '/Candidate:/ {print $2}')
        [[ -n $ver && $ver != "(none)" ]] || { echo "appliance: no candidate for $p" >&2; return 1; }
        dir=$APPL_DIR/deb/$name
        [[ $(cat "$dir/.version" 2>/dev/null) == "$ver" ]] && continue
        echo "appliance: fetching $p $ver" >&2
        rm -f "$debs/${name}"_*.deb
        (cd "$debs" && apt-get -q -o APT::Sandbox::User=root download "$p=$ver" >/dev/null)
        rm -rf "$dir" && mkdir -p "$dir"
        dpkg -x "$debs/${name}"_*.deb "$dir"
        echo "$ver" >"$dir/.version"
    done
}

# appl_busybox_applets BUSYBOX: the applet paths (bin/ls, sbin/init, ...) of a mipsel
# busybox, asked under qemu-user.
appl_busybox_applets() {
    qemu-mipsel-static "$1" --list-full
}

# appl_install_busybox BUSYBOX ROOT: busybox in ROOT/bin with a symlink per applet
# (existing files win: the overlay or other packages may provide their own).
appl_install_busybox() {
    local bb=$1 root=$2 a rel
    install -D -m 0755 "$bb" "$root/bin/busybox"
    while read -r a; do
        [[ -e $root/$a || -L $root/$a || $a == bin/busybox ]] && continue
        mkdir -p "$root/$(dirname "$a")"
        rel=$(realpath -m --relative-to="$root/$(dirname "$a")" "$root/bin/busybox")
        ln -s "$rel" "$root/$a"
    done < <(appl_busybox_applets "$bb")
}
