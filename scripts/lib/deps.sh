# shellcheck shell=bash
# Sourced helper: installs what OxiNVR's scripts and tests need from Debian's apt.
#   source scripts/lib/deps.sh; ensure_apt PKG...; ensure_test_deps
# Idempotent: dpkg-query decides what is missing, so a ready machine costs ~0.1 s
# and never touches the network. `apt-get update` runs at most once per run.

_OXINVR_APT_UPDATED=${_OXINVR_APT_UPDATED:-0}

# Prints the packages among "$@" that are not fully installed.
_missing_apt() {
    local p st
    for p in "$@"; do
        st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
        [[ $st == installed ]] || printf '%s\n' "$p"
    done
}

# ensure_apt PKG...: installs only the missing packages (quiet, non-interactive).
ensure_apt() {
    local missing sudo=()
    mapfile -t missing < <(_missing_apt "$@")
    ((${#missing[@]})) || return 0
    if ((EUID != 0)); then
        command -v sudo >/dev/null || { echo "deps: need root to install: ${missing[*]}" >&2; return 1; }
        sudo=(sudo)
    fi
    echo "deps: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    # apt's chatter goes to a log that is shown only if it fails.
    local log rc=0
    log=$(mktemp)
    if [[ $_OXINVR_APT_UPDATED != 1 ]]; then
        "${sudo[@]}" apt-get update -qq >"$log" 2>&1 || rc=$?
        ((rc)) || _OXINVR_APT_UPDATED=1
    fi
    ((rc)) || "${sudo[@]}" apt-get install -y -qq -o Dpkg::Use-Pty=0 \
        --no-install-recommends "${missing[@]}" >"$log" 2>&1 || rc=$?
    ((rc)) && { cat "$log" >&2; echo "deps: apt-get failed ($rc)" >&2; }
    rm -f "$log"
    return "$rc"
}

# The crate's rust-version (Cargo.toml); an older cargo cannot build it.
OXINVR_RUST_MIN=1.85

# _cargo_ok: true if `cargo` on PATH runs and is at least OXINVR_RUST_MIN.
_cargo_ok() {
    local v
    v=$(cargo --version 2>/dev/null | awk '{print $2}') || return 1
    [[ -n $v ]] && [[ $(printf '%s\n%s\n' "$OXINVR_RUST_MIN" "${v%%-*}" | sort -V | head -n1) == "$OXINVR_RUST_MIN" ]]
}

# ensure_cargo: a Rust toolchain of at least OXINVR_RUST_MIN on PATH. rustup's
# (~/.cargo/bin) is used when present; otherwise Debian's rustc-web/cargo-web
# (1.96, the same packages the MIPS build uses) are installed and used, and the
# script says so. A C compiler is needed too (SQLite, ring), and a C++ one for
# OpenH264 (the openh264 crate builds it from source for src/detect).
ensure_cargo() {
    ensure_apt gcc g++ libc6-dev ca-certificates
    [[ -d $HOME/.cargo/bin ]] && PATH="$HOME/.cargo/bin:$PATH"
    _cargo_ok && return 0
    if command -v cargo >/dev/null; then
        echo "deps: $(cargo --version) is older than $OXINVR_RUST_MIN; using Debian's rustc-web/cargo-web instead" >&2
    else
        echo "deps: no Rust toolchain found; installing and using Debian's rustc-web/cargo-web" >&2
    fi
    ensure_apt rustc-web cargo-web
    PATH="/usr/bin:$PATH"
    export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
    _cargo_ok && return 0
    echo "deps: Debian's cargo ($(cargo --version 2>&1)) is not usable; install Rust >= $OXINVR_RUST_MIN (rustup) and retry" >&2
    return 1
}

# Packages for the test camera (GStreamer RTSP server via /usr/bin/python3 + gi),
# the ffmpeg/ffprobe checks, the replay clip source (opencv-doc's vtest.avi), sqlite3, and
# faketime (libfaketime: tests/clock.rs starts the binary in 1970), and e2fsprogs/mount for the
# disk fault tests (device-mapper is not used: the CI container has no dm driver).
OXINVR_TEST_APT=(
    python3-gi gir1.2-gst-rtsp-server-1.0
    gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
    gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly
    gstreamer1.0-x      # clockoverlay (pango plugin) lives here on Debian 12
    gstreamer1.0-libav ffmpeg opencv-doc sqlite3 procps faketime
    e2fsprogs mount     # tests/disk_faults.rs: mkfs.ext4, losetup, mount (loop devices, as root)
    mosquitto mosquitto-clients  # tests/mqtt.rs: the broker (started by the test, not the service), mosquitto_sub/passwd
    openssl             # tests/mqtt.rs: the CA and certificate of the mqtts:// broker
)

ensure_test_deps() {
    ensure_apt "${OXINVR_TEST_APT[@]}"
    ensure_cargo
}

# A PyPI package at a pinned version in a virtualenv of its own under ~/.cache/oxinvr/NAME
# (any python3 >= 3.9 will do: none of them needs python3-gi); made again only when the
# pinned version changes. Prints the virtualenv's path.
ensure_pypi_venv() {
    local name=$1 package=$2 version=$3
    local venv="${XDG_CACHE_HOME:-$HOME/.cache}/oxinvr/$name"
    echo "$venv"
    if [[ -x $venv/bin/python ]] && [[ $(cat "$venv/.oxinvr-version" 2>/dev/null) == "$version" ]]; then
        return 0
    fi
    local py
    py=$(command -v python3 || true)
    [[ -n $py ]] || { ensure_apt python3 python3-venv >&2; py=/usr/bin/python3; }
    if ! "$py" -m venv --help >/dev/null 2>&1; then
        ensure_apt python3-venv >&2
        py=/usr/bin/python3
    fi
    echo "deps: installing $package $version into $venv" >&2
    rm -rf "$venv"
    "$py" -m venv "$venv" >&2 &&
        "$venv/bin/pip" install -q --disable-pip-version-check "$package==$version" >&2 &&
        echo "$version" >"$venv/.oxinvr-version" ||
        { echo "deps: $package could not be installed" >&2; return 1; }
}

# Schemathesis (PyPI), the OpenAPI-driven property-based fuzzer of tests/api_fuzz.rs and
# scripts/fuzz-api. Pinned, so a run is reproducible; OXINVR_SCHEMATHESIS names its CLI.
OXINVR_SCHEMATHESIS_VERSION=4.32.5
ensure_schemathesis() {
    local venv
    venv=$(ensure_pypi_venv schemathesis schemathesis "$OXINVR_SCHEMATHESIS_VERSION") || return 1
    export OXINVR_SCHEMATHESIS="$venv/bin/st"
}

# prometheus_client (PyPI), Prometheus's own Python client, whose text-format parser
# tests/metrics.rs reads `GET /api/metrics` with. Pinned; OXINVR_PROMETHEUS_PYTHON names
# its python.
OXINVR_PROMETHEUS_CLIENT_VERSION=0.26.0
ensure_prometheus_client() {
    local venv
    venv=$(ensure_pypi_venv prometheus-client prometheus-client "$OXINVR_PROMETHEUS_CLIENT_VERSION") || return 1
    export OXINVR_PROMETHEUS_PYTHON="$venv/bin/python"
}

# Garage (crates.io), the S3-compatible object store tests/replicate.rs runs as a
# 3-node cluster on loopback. A separate program under its own licence, never linked
# into OxiNVR: built once into ~/.cache/oxinvr/garage-VERSION (long on 2 cores) and
# reused; OXINVR_GARAGE names the binary.
OXINVR_GARAGE_VERSION=2.3.0
ensure_garage() {
    local root="${XDG_CACHE_HOME:-$HOME/.cache}/oxinvr/garage-$OXINVR_GARAGE_VERSION"
    local bin="$root/bin/garage"
    if [[ ! -x $bin ]] || [[ $("$bin" --version 2>/dev/null) != *"$OXINVR_GARAGE_VERSION"* ]]; then
        ensure_cargo || return 1
        echo "deps: building garage $OXINVR_GARAGE_VERSION into $root (takes a while)" >&2
        cargo install garage --locked --version "$OXINVR_GARAGE_VERSION" --root "$root" >&2 ||
            { echo "deps: garage could not be installed" >&2; return 1; }
    fi
    export OXINVR_GARAGE="$bin"
}
