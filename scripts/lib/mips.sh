# shellcheck shell=bash
# Sourced by scripts/build-mips and scripts/test-mips: the MIPS32r2 little-endian
# cross toolchain. docs/MIPS.md says why it is built this way.
#
#   source scripts/lib/deps.sh; source scripts/lib/mips.sh
#   mips_setup                 # installs what is missing, exports the cross environment
#   mips_cargo build ...       # Debian's cargo + build-std for $MIPS_TARGET
#   mips_set_nan2008 FILE      # sets EF_MIPS_NAN2008 in an ELF header
#
# OXINVR_MIPS_FLOAT=soft (default, what we ship) or hard (fpxx hard-float, see
# docs/MIPS.md). OXINVR_MIPS_TOOLS moves the pip-installed tools (default
# target/mips-tools).

MIPS_TARGET=mipsel-unknown-linux-musl
MIPS_FLOAT=${OXINVR_MIPS_FLOAT:-soft}
MIPS_PROFILE=release-mips
# Pinned: zig 0.14.1 links stock musl 1.2.5 (mallocng); zig >= 0.15 replaces parts of
# musl with its own code (0.17 even malloc), which we have not vetted.
MIPS_ZIGLANG_VERSION=0.14.1
MIPS_CARGO_ZIGBUILD_VERSION=0.24.0
# Debian's rustc 1.96 + its std source (build-std), qemu-user, MIPS binutils
# (readelf/objdump/strip), file, and a venv for the PyPI tools.
MIPS_APT=(rustc-web cargo-web rust-web-src qemu-user-static binutils-mipsel-linux-gnu
          file python3-venv)

mips_setup() {
    local root tools venv zig_target mcpu features
    root=$(pwd)
    ensure_apt "${MIPS_APT[@]}"

    tools=${OXINVR_MIPS_TOOLS:-$root/target/mips-tools}
    venv=$tools/venv
    if [[ $("$venv/bin/python3" -m ziglang version 2>/dev/null) != "$MIPS_ZIGLANG_VERSION" ]] ||
        [[ $("$venv/bin/cargo-zigbuild" --version 2>/dev/null) != *" $MIPS_CARGO_ZIGBUILD_VERSION" ]]; then
        echo "mips: installing ziglang==$MIPS_ZIGLANG_VERSION cargo-zigbuild==$MIPS_CARGO_ZIGBUILD_VERSION into $venv" >&2
        /usr/bin/python3 -m venv "$venv"
        "$venv/bin/pip" install -q "ziglang==$MIPS_ZIGLANG_VERSION" \
            "cargo-zigbuild==$MIPS_CARGO_ZIGBUILD_VERSION" >&2
    fi

    case $MIPS_FLOAT in
        soft) # no FPU instruction anywhere (Rust, C crates, musl, compiler-rt, libunwind)
            zig_target=mipsel-linux-musleabi
            mcpu=mips32r2
            features=+crt-static ;;
        hard) # FPXX: runs with the FPU in FR=0 or FR=1; legacy NaN code, see docs/MIPS.md
            zig_target=mipsel-linux-musleabihf
            mcpu=mips32r2+fpxx+nooddspreg
            features=+crt-static,-soft-float,+fpxx,+nooddspreg ;;
        *) echo "mips: OXINVR_MIPS_FLOAT must be soft or hard, not '$MIPS_FLOAT'" >&2; return 1 ;;
    esac

    # zig cc is the C compiler (ring, SQLite) and the linker; cargo-zigbuild's `zig cc`
    # front filters the rustc/cc-rs arguments zig does not take. -fno-sanitize=all:
    # zig turns UBSan traps on for unoptimised C (the test profile) otherwise.
    mkdir -p "$tools/bin"
    local zenv
    zenv="export CARGO_ZIGBUILD_ZIG_COMMAND='$venv/bin/python3' CARGO_ZIGBUILD_ZIG_COMMAND_ARGS='-m ziglang' CARGO_ZIGBUILD_ZIG_VERSION=$MIPS_ZIGLANG_VERSION"
    printf '#!/bin/sh\n%s\nexec "%s" zig cc -- -target %s -mcpu=%s -fno-sanitize=all "$@"\n' \
        "$zenv" "$venv/bin/cargo-zigbuild" "$zig_target" "$mcpu" > "$tools/bin/cc-$MIPS_FLOAT"
    printf '#!/bin/sh\n%s\nexec "%s" zig ar -- "$@"\n' \
        "$zenv" "$venv/bin/cargo-zigbuild" > "$tools/bin/ar"
    # C++ (OpenH264, src/detect): zig's bundled libc++, linked statically
    # (CXXSTDLIB=c++ makes the cc crate ask for -lc++, which zig cc provides).
    printf '#!/bin/sh\n%s\nexec "%s" zig c++ -- -target %s -mcpu=%s -fno-sanitize=all "$@"\n' \
        "$zenv" "$venv/bin/cargo-zigbuild" "$zig_target" "$mcpu" > "$tools/bin/c++-$MIPS_FLOAT"
    chmod +x "$tools/bin/cc-$MIPS_FLOAT" "$tools/bin/c++-$MIPS_FLOAT" "$tools/bin/ar"

    # Debian's cargo/rustc (1.96, matching rust-web-src) for this build only; the
    # host build keeps rustup's toolchain. Its own target dir: different rustc.
    export PATH="/usr/bin:$PATH"
    export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1
    export CARGO_TARGET_DIR=$root/target/mips-build/$MIPS_FLOAT
    # RUSTFLAGS from the caller would replace the target's flags below.
    unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS
    export CARGO_TARGET_MIPSEL_UNKNOWN_LINUX_MUSL_LINKER=$tools/bin/cc-$MIPS_FLOAT
    export CARGO_TARGET_MIPSEL_UNKNOWN_LINUX_MUSL_RUSTFLAGS="-C target-feature=$features -C link-self-contained=no"
    export CC_mipsel_unknown_linux_musl=$tools/bin/cc-$MIPS_FLOAT
    export AR_mipsel_unknown_linux_musl=$tools/bin/ar
    export CXX_mipsel_unknown_linux_musl=$tools/bin/c++-$MIPS_FLOAT
    export CXXSTDLIB_mipsel_unknown_linux_musl=c++
    # SQLite without what OxiNVR never asks of it (full-text search, R-tree, dbstat,
    # extension loading, soundex, STAT4 planner statistics): ~0.3 MB of the binary.
    # JSON stays (the events query uses json_each). Host builds keep libsqlite3-sys's set.
    export LIBSQLITE3_FLAGS="-USQLITE_ENABLE_FTS3 -USQLITE_ENABLE_FTS3_PARENTHESIS -USQLITE_ENABLE_FTS5
        -USQLITE_ENABLE_RTREE -USQLITE_ENABLE_DBSTAT_VTAB -USQLITE_ENABLE_COLUMN_METADATA
        -USQLITE_ENABLE_LOAD_EXTENSION -DSQLITE_OMIT_LOAD_EXTENSION -USQLITE_SOUNDEX -USQLITE_ENABLE_STAT4"
    # shellcheck disable=SC2034 # for the scripts that source this file
    MIPS_OUT=$CARGO_TARGET_DIR/$MIPS_TARGET/$MIPS_PROFILE/oxinvr
}

# mips_cargo SUBCOMMAND ARGS...: Debian's cargo with std built from source.
mips_cargo() {
    local sub=$1
    shift
    # The binary's std: no unwinder (panic = "abort") and no backtrace symbolizer (the
    # binary is stripped: gimli/addr2line/demangling had nothing to read), size-optimised
    # algorithms (docs/MIPS.md, "Size").
    local std=(-Zbuild-std=std,panic_abort -Zbuild-std-features=optimize_for_size)
    [[ $sub == test ]] && std=(-Zbuild-std) # the default set: with unwinding and libtest
    # Without the `objects` feature: the box does not run the model (docs/MIPS.md, "Object
    # detection on the box"); its remote detector client is not behind the feature.
    cargo "$sub" --locked "${std[@]}" --target "$MIPS_TARGET" --no-default-features "$@"
}

# mips_set_nan2008 FILE: sets EF_MIPS_NAN2008 (0x400) in e_flags of a 32-bit
# little-endian MIPS ELF (idempotent). See docs/MIPS.md for why this is sound here.
mips_set_nan2008() {
    python3 - "$1" <<'PY'
import struct, sys
with open(sys.argv[1], "r+b") as f:
    h = f.read(52)
    if h[:4] != b"\x7fELF" or h[4] != 1 or h[5] != 1 or struct.unpack_from("<H", h, 18)[0] != 8:
        sys.exit(f"{sys.argv[1]}: not a 32-bit little-endian MIPS ELF")
    flags = struct.unpack_from("<I", h, 36)[0]
    f.seek(36)
    f.write(struct.pack("<I", flags | 0x400))
PY
}

# mips_fpu_insns FILE: prints how many FPU (COP1/COP1X, FP loads/stores, moves on FP
# condition codes) instructions the executable sections of FILE hold; fails if
# objdump decodes no instruction at all.
mips_fpu_insns() {
    mipsel-linux-gnu-objdump -d --no-show-raw-insn "$1" | awk -F'\t' '
        NF >= 2 && $1 ~ /^ *[0-9a-f]+:$/ {
            t++
            m = $2
            if (m ~ /^(l|s)(w|d)x?c1$/ || m ~ /^(luxc1|suxc1)$/ ||
                m ~ /^(m[tf]h?c1|[ct]fc1|ctc1)$/ || m ~ /^bc1[tf]l?$/ ||
                m ~ /^mov[tf](\.|$)/ || m ~ /\.(s|d|ps)$/ ||
                m ~ /^(cvt|trunc|round|ceil|floor)\./ || m ~ /^c\.[a-z]+\./) n++
        }
        END { if (!t) exit 1; print n + 0 }'
}

# mips_qemu_so_error_ok: true if qemu-mipsel-static hands a guest the MIPS errno for
# getsockopt(SO_ERROR). QEMU 7.2 (Debian 12) passes the host's value through: a refused
# non-blocking connect (what std's TcpStream::connect_timeout does) reads as errno 111
# (x86's ECONNREFUSED; MIPS's is 146), so the guest sees "os error 111", not
# ConnectionRefused. A real MIPS kernel answers 146. Needs mips_setup first.
mips_qemu_so_error_ok() {
    local dir
    dir=$(mktemp -d)
    cat > "$dir/probe.c" <<'C'
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
int main(void) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    socklen_t l = sizeof a;
    int s = socket(AF_INET, SOCK_STREAM, 0), e = 0;
    bind(s, (struct sockaddr *)&a, sizeof a);  /* a port nobody listens on */
    getsockname(s, (struct sockaddr *)&a, &l);
    close(s);
    s = socket(AF_INET, SOCK_STREAM, 0);
    fcntl(s, F_SETFL, O_NONBLOCK);
    connect(s, (struct sockaddr *)&a, sizeof a);
    struct pollfd p = {s, POLLOUT, 0};
    poll(&p, 1, 2000);
    l = sizeof e;
    getsockopt(s, SOL_SOCKET, SO_ERROR, &e, &l);
    return e == ECONNREFUSED ? 0 : 1;
}
C
    local rc=0
    "$CC_mipsel_unknown_linux_musl" -static -O1 -o "$dir/probe" "$dir/probe.c" &&
        qemu-mipsel-static "$dir/probe" || rc=1
    rm -rf "$dir"
    return "$rc"
}
