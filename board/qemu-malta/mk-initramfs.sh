#!/usr/bin/env bash
# Builds the QEMU malta initramfs: busybox, the A/B selector /init, and (for a
# kernel with modular drivers, like Debian's) the modules it needs, in load order.
# No root needed: the cpio (newc) is written directly, /dev/console included.
#
#   mk-initramfs.sh --busybox FILE --out initramfs.cpio.gz
#                   [--modules DIR --kver KVER]   # DIR/lib/modules/KVER/kernel/...
#                   [--e2fsck FILE]               # a static e2fsck for the boot partition
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
busybox='' out='' moddir='' kver='' e2fsck=''
while (($#)); do
    case $1 in
        --busybox) busybox=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --modules) moddir=$2; shift 2 ;;
        --kver) kver=$2; shift 2 ;;
        --e2fsck) e2fsck=$2; shift 2 ;;
        *) echo "mk-initramfs: unknown option $1" >&2; exit 2 ;;
    esac
done
[[ -f $busybox && -n $out ]] || { echo "usage: $0 --busybox FILE --out FILE [...]" >&2; exit 2; }

# Drivers the selector and the system need from a modular kernel: disk (virtio),
# network (virtio-net, pcnet32 for -device pcnet), file systems, watchdog.
# crc32c_generic is requested by ext4/jbd2 through the crypto API (no modprobe here).
MODULES=(virtio_pci virtio_blk virtio_net pcnet32 crc32c_generic ext4 squashfs softdog)

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,dev,proc,sys,run,boot,newroot,lib/oxinvr,lib/modules}
install -m 0755 "$busybox" "$root/bin/busybox"
for a in sh mount umount insmod sleep usleep sed grep mv cat echo mkdir printf sync \
         switch_root reboot true; do
    ln -s busybox "$root/bin/$a"
done
install -m 0755 "$here/initramfs/init" "$root/init"
install -m 0644 "$here/../../overlay/usr/libexec/oxinvr/bootenv.sh" "$root/lib/oxinvr/bootenv.sh"
[[ -n $e2fsck ]] && install -m 0755 "$e2fsck" "$root/sbin/e2fsck"

if [[ -n $moddir ]]; then
    # depmod (kmod) works on foreign-architecture modules; the closure of MODULES
    # is then loaded by /init with insmod in dependency order.
    python3 - "$moddir" "$kver" "$root/lib/modules" "${MODULES[@]}" <<'PY'
import lzma, os, shutil, subprocess, sys, tempfile
src, kver, dst, wanted = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
base = os.path.join(src, "lib/modules", kver)
with tempfile.TemporaryDirectory() as t:
    os.makedirs(os.path.join(t, "lib/modules"))
    shutil.copytree(base, os.path.join(t, "lib/modules", kver), symlinks=True)
    subprocess.run(["depmod", "-b", t, kver], check=True)
    deps, byname = {}, {}
    for line in open(os.path.join(t, "lib/modules", kver, "modules.dep")):
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
        name = os.path.basename(mod).split(".ko")[0].replace("-", "_")
        byname[name] = mod
    order, seen = [], set()
    def visit(m):
        if m in seen:
            return
        seen.add(m)
        for d in deps[m]:
            visit(d)
        order.append(m)
    for w in wanted:
        if w not in byname:
            sys.exit(f"mk-initramfs: module {w} not in {base}")
        visit(byname[w])
    names = []
    for m in order:
        data = open(os.path.join(base, m), "rb").read()
        if m.endswith(".xz"):
            data = lzma.decompress(data)
        name = os.path.basename(m).split(".ko")[0] + ".ko"
        open(os.path.join(dst, name), "wb").write(data)
        names.append(name)
    open(os.path.join(dst, "load.order"), "w").write("\n".join(names) + "\n")
    print("mk-initramfs: modules:", " ".join(n[:-3] for n in names))
PY
fi

# newc cpio of the tree plus /dev/console, owned by root, fixed mtime.
python3 - "$root" "$out" "${SOURCE_DATE_EPOCH:-0}" <<'PY'
import gzip, os, stat, sys
root, out, mtime = sys.argv[1], sys.argv[2], int(sys.argv[3])
entries, ino = [], 1
def add(name, mode, data=b"", rdev=(0, 0)):
    global ino
    entries.append((name, mode, data, rdev, ino)); ino += 1
for d, dirs, files in os.walk(root):
    dirs.sort()
    rel = os.path.relpath(d, root)
    if rel != ".":
        add(rel, stat.S_IFDIR | 0o755)
    for f in sorted(files + [x for x in dirs if os.path.islink(os.path.join(d, x))]):
        p = os.path.join(d, f); r = os.path.normpath(os.path.join(rel, f))
        st = os.lstat(p)
        if stat.S_ISLNK(st.st_mode):
            add(r, stat.S_IFLNK | 0o777, os.readlink(p).encode())
        else:
            add(r, stat.S_IFREG | (st.st_mode & 0o777), open(p, "rb").read())
add("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))
def pad(n): return b"\0" * ((4 - n % 4) % 4)
buf = bytearray()
for name, mode, data, (ma, mi), i in entries + [("TRAILER!!!", 0, b"", (0, 0), 0)]:
    nb = name.encode() + b"\0"
    hdr = "070701" + "".join("%08X" % v for v in (
        i, mode, 0, 0, 2 if stat.S_ISDIR(mode) else 1, mtime, len(data), 0, 0, ma, mi, len(nb), 0))
    buf += hdr.encode() + nb + pad(110 + len(nb)) + data + pad(len(data))
with gzip.GzipFile(out, "wb", mtime=mtime, compresslevel=9) as g:
    g.write(buf)
PY
echo "mk-initramfs: $out: $(stat -c %s "$out") bytes"
