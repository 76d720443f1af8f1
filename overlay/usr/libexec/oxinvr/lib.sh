# Sourced by the init scripts and tools under /usr/libexec/oxinvr (busybox ash).
# docs/APPLIANCE.md describes the layout file and the boot selector state.

CONF=/var/lib/oxinvr/oxinvr.toml
RUN=/run/oxinvr
LAYOUT=$RUN/layout
[ -r /etc/oxinvr/appliance.conf ] && . /etc/oxinvr/appliance.conf

# say MSG: to the serial console (the tests watch it) and to syslog.
say() {
    echo "oxinvr: $*" >/dev/console 2>/dev/null
    logger -t oxinvr-init "$*" 2>/dev/null
    return 0
}

uptime_s() { cut -d' ' -f1 /proc/uptime; }

# fsck_data DEV: `e2fsck -p` (replays the journal, fixes what is safe); when it
# gives up (exit 4 and above, as after some power cuts), `e2fsck -fy` repairs the
# rest, so the box records again by itself instead of on a damaged file system.
# The console lines say what happened (scripts/power-cuts counts them);
# tests/appliance_fsck.rs runs it on damaged images.
fsck_data() {
    /sbin/e2fsck -p "$1" >/dev/null 2>&1
    rc=$?
    [ $rc -eq 0 ] && return 0
    if [ $rc -lt 4 ]; then
        say "data: e2fsck -p fixed the file system ($rc)"
        return 0
    fi
    say "data: e2fsck -p could not fix the file system ($rc): running e2fsck -fy"
    /sbin/e2fsck -fy "$1" >/dev/null 2>&1
    rc=$?
    if [ $rc -lt 4 ]; then
        say "data: e2fsck -fy repaired the file system ($rc)"
    else
        say "data: e2fsck -fy found errors it could not fix ($rc); mounting anyway"
    fi
}

# is_mounted DIR (busybox may lack `mountpoint`). False before /proc is mounted.
is_mounted() { grep -q "^[^ ]* $1 " /proc/mounts 2>/dev/null; }

# cmdline_arg NAME: the value of NAME=... on the kernel command line.
cmdline_arg() {
    for a in $(cat /proc/cmdline); do
        case $a in "$1"=*) echo "${a#*=}"; return 0 ;; esac
    done
    return 1
}

# detect_layout: writes $LAYOUT (shell lines) from the mounted root device:
#   OXINVR_SLOT=A|B          the running slot
#   OXINVR_MEDIA=block|ubi   SD/eMMC/virtio partitions, or UBI volumes on NAND
#   OXINVR_DISK=/dev/vda     (block) the whole disk
#   OXINVR_BOOT_PART, OXINVR_SLOT_A, OXINVR_SLOT_B, OXINVR_DATA_PART
#   OXINVR_BOOT_STATE=file:/boot/boot.env | uboot-env   where BOOT_* live
#   OXINVR_SELECTOR=initramfs|u-boot|unknown
detect_layout() {
    root=$(cmdline_arg root || true)
    m=$(awk '$2 == "/" && $1 ~ "^/dev/" && $1 != "/dev/root" { d = $1 } END { print d }' /proc/mounts)
    [ -n "$m" ] && root=$m
    media=block disk= pfx= n=
    case $root in
        /dev/mmcblk*p[0-9]* | /dev/nvme*p[0-9]*) n=${root##*p}; disk=${root%p*}; pfx=${disk}p ;;
        /dev/ubiblock*_[0-9]*) media=ubi; n=${root##*_} ;;
        /dev/[hsv]d[a-z][0-9]*) n=${root##*[a-z]}; disk=${root%$n}; pfx=$disk ;;
    esac
    slot=$(cat $RUN/slot 2>/dev/null || cmdline_arg oxinvr.slot || true)
    if [ -z "$slot" ]; then
        case $n in 2) slot=A ;; 3) slot=B ;; *) slot=A ;; esac
    fi
    selector=unknown
    [ -e $RUN/selector ] && selector=initramfs
    [ $selector = unknown ] && cmdline_arg oxinvr.slot >/dev/null && selector=u-boot
    state=file:/boot/boot.env
    [ $selector = u-boot ] && [ -r /etc/fw_env.config ] && state=uboot-env
    mkdir -p $RUN
    echo "$slot" >$RUN/slot
    {
        echo "OXINVR_SLOT=$slot"
        echo "OXINVR_MEDIA=$media"
        echo "OXINVR_ROOT=$root"
        if [ $media = block ]; then
            echo "OXINVR_DISK=$disk"
            echo "OXINVR_BOOT_PART=${pfx}1"
            echo "OXINVR_SLOT_A=${pfx}2"
            echo "OXINVR_SLOT_B=${pfx}3"
            echo "OXINVR_DATA_PART=${pfx}4"
        else # the volumes of board/ingenic-a1/ubinize.cfg
            echo "OXINVR_BOOT_PART="
            echo "OXINVR_SLOT_A=/dev/ubi0_2"
            echo "OXINVR_SLOT_B=/dev/ubi0_3"
            echo "OXINVR_DATA_PART=ubi0:data"
        fi
        echo "OXINVR_BOOT_STATE=$state"
        echo "OXINVR_SELECTOR=$selector"
    } >$LAYOUT.tmp
    mv $LAYOUT.tmp $LAYOUT
}

load_layout() {
    [ -r $LAYOUT ] || detect_layout
    . $LAYOUT
}

# has_ext_fs DEV: true if DEV holds an ext2/3/4 superblock (magic 0xEF53 at 1080).
has_ext_fs() {
    [ "$(dd if="$1" bs=1 skip=1080 count=2 2>/dev/null | od -An -tx1 | tr -d ' \n')" = 53ef ]
}

# oxinvr_has COMMAND: true if /usr/bin/oxinvr lists COMMAND in its help.
oxinvr_has() {
    # grep without -q reads it all: oxinvr aborts when its pipe closes early.
    [ -x /usr/bin/oxinvr ] && /usr/bin/oxinvr --help 2>&1 | grep -E "^ +$1( |\$)" >/dev/null
}
