"""HTTPS handshake cost (scripts/bench-tls): starts an `oxinvr run` with
web.tls on (x86 release binary, and the MIPS binary under qemu-mipsel-static),
then times N fresh connections per TLS version: TCP connect + handshake (the
box's self-signed certificate trusted explicitly), and one HTTPS GET
/api/health after it. Medians, p90 and max go to bench/results/tls-<date>.md.

Run by Debian's /usr/bin/python3 (its ssl module is the client: OpenSSL 3)."""

import argparse
import datetime
import json
import os
import platform
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import free_port  # noqa: E402


def start(cmd, workdir):
    http, https = free_port(), free_port()
    data = os.path.join(workdir, "data")
    conf = os.path.join(workdir, "oxinvr.toml")
    with open(conf, "w") as f:
        f.write(f'[storage]\ndata_dir = "{data}"\n[web]\nlisten = "127.0.0.1:{http}"\n'
                f'tls = true\ntls_listen = "127.0.0.1:{https}"\n')
    log = open(os.path.join(workdir, "oxinvr.log"), "w")
    p = subprocess.Popen(cmd + ["run", "--config", conf], stdout=subprocess.DEVNULL, stderr=log)
    cert = os.path.join(data, "tls", "cert.pem")
    end = time.time() + 120
    while time.time() < end:
        if p.poll() is not None:
            sys.exit(f"oxinvr exited: {open(log.name).read()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", https), timeout=1).close()
            if os.path.exists(cert):
                return p, https, cert
        except OSError:
            pass
        time.sleep(0.2)
    p.kill()
    sys.exit("oxinvr did not listen on its HTTPS port in 120 s")


def context(cert, version):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cert)
    ctx.check_hostname = True
    ctx.minimum_version = ctx.maximum_version = version
    return ctx


def one(port, ctx):
    """(handshake ms, GET /api/health ms) of one fresh connection."""
    t0 = time.perf_counter()
    raw = socket.create_connection(("127.0.0.1", port), timeout=30)
    s = ctx.wrap_socket(raw, server_hostname="localhost")
    t1 = time.perf_counter()
    s.sendall(b"GET /api/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    got = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        got += d
    t2 = time.perf_counter()
    s.close()
    if not got.startswith(b"HTTP/1.1 200"):
        sys.exit(f"unexpected answer: {got[:200]!r}")
    return (t1 - t0) * 1000, (t2 - t1) * 1000


def stats(xs):
    xs = sorted(xs)
    return {"median": statistics.median(xs), "p90": xs[int(len(xs) * 0.9) - 1], "max": xs[-1], "n": len(xs)}


def measure(name, cmd, n):
    with tempfile.TemporaryDirectory() as tmp:
        p, port, cert = start(cmd, tmp)
        try:
            out = {}
            for label, v in (("TLS 1.3", ssl.TLSVersion.TLSv1_3), ("TLS 1.2", ssl.TLSVersion.TLSv1_2)):
                ctx = context(cert, v)
                one(port, ctx)  # warm-up (first connection, page cache)
                hs, get = zip(*(one(port, ctx) for _ in range(n)))
                out[label] = {"handshake": stats(hs), "get": stats(get)}
                print(f"{name} {label}: handshake median {out[label]['handshake']['median']:.2f} ms", flush=True)
            return out
        finally:
            p.terminate()
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200, help="connections per TLS version (x86)")
    ap.add_argument("--n-mips", type=int, default=50, help="connections per TLS version (MIPS under qemu)")
    ap.add_argument("--x86", default="target/release/oxinvr")
    ap.add_argument("--mips", default="target/mips/oxinvr", help="'' to skip")
    ap.add_argument("--mips-before", default="", help="a MIPS binary without TLS, to compare sizes")
    ap.add_argument("--out", default=f"bench/results/tls-{datetime.date.today()}.md")
    a = ap.parse_args()
    runs = [("x86-64 release", [a.x86], a.n)]
    if a.mips:
        runs.append(("MIPS32r2 soft-float under qemu-mipsel-static", ["qemu-mipsel-static", a.mips], a.n_mips))
    results = {name: measure(name, cmd, n) for name, cmd, n in runs}
    size = os.path.getsize(a.mips) if a.mips and os.path.exists(a.mips) else None
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = [
        f"# HTTPS handshake cost ({datetime.date.today()})", "",
        f"`scripts/bench-tls` at {rev}: `oxinvr run` with `web.tls = true` (rustls 0.23, ring provider,",
        "self-signed ECDSA P-256 certificate made at first start, TCP_NODELAY), loopback. Each sample is",
        "a fresh connection: TCP connect + full handshake (no resumption; Python's ssl/OpenSSL 3 client",
        "trusting the box's cert.pem), then `GET /api/health` on it. One warm-up connection first.",
        f"Host: {cpu}, {os.cpu_count()} cores, shared with other jobs (load {os.getloadavg()[0]:.1f} at the end).", "",
        "| binary | version | n | handshake median | p90 | max | GET after it, median |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        for v, m in r.items():
            h, g = m["handshake"], m["get"]
            lines.append(f"| {name} | {v} | {h['n']} | {h['median']:.2f} ms | {h['p90']:.2f} ms | {h['max']:.2f} ms | {g['median']:.2f} ms |")
    lines.append("")
    if size:
        lines.append(f"MIPS binary (`{a.mips}`, stripped, static): {size} bytes ({size / 1048576:.2f} MiB); the limit is 8 MiB.")
        if a.mips_before and os.path.exists(a.mips_before):
            before = os.path.getsize(a.mips_before)
            lines.append(f"Without HTTPS (`{a.mips_before}`): {before} bytes; HTTPS (rustls, ring's TLS code, rcgen) adds "
                         f"{size - before} bytes ({(size - before) / before * 100:+.1f} %).")
        lines.append("")
    lines.append("qemu-user translates MIPS code on an x86 core, so its figures are an emulation cost, not the")
    lines.append("A1's: they bound how the handshake's cost compares with the rest of the work (health is the")
    lines.append("same request in both).")
    open(a.out, "w").write("\n".join(lines) + "\n")
    print(f"wrote {a.out}")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
