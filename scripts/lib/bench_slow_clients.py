"""API latency with and without hostile clients (see scripts/bench-slow-clients).

One recorder (default [web] limits) records a snow test camera (~1 MB/s). The
good client on 127.0.0.1 alternates GET /api/health and an authenticated
GET /api/streams/cam, one connection each, and times every answer: first alone,
then while 64 clients on 127.0.0.10-13 ask for a ~6 MB export and never read (small
receive buffer) and 64 on 127.0.0.3 send a request head one byte a second.
A call that gets no answer within --timeout counts as failed."""
import argparse
import datetime
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import BIN, ROOT, free_port, run_recorder, sample  # noqa: E402

HOSTILE = 64


def start_camera():
    port = free_port()
    cam = subprocess.Popen([os.path.join(ROOT, "scripts", "test-camera"), "--port", str(port), "--fps", "15",
                            "--pattern", "snow", "--bitrate", "8000"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = cam.stdout.readline()
    if "READY" not in line:
        cam.kill()
        sys.exit(f"bench-slow-clients: the test camera did not start: {line!r}")
    return cam, port


def start_recorder(binary, work, cam_port):
    return run_recorder(binary, work, '[storage]\ndata_dir = "{work}/data"\nsync_seconds = 1\n[web]\n'
                        'listen = "127.0.0.1:{port}"\n[[streams]]\nname = "cam"\n'
                        f'url = "rtsp://127.0.0.1:{cam_port}/h264"\nbitrate_kbps = 8000\n')


def call(port, path, token, timeout):
    """Seconds to a complete answer, or None (error or no answer in time)."""
    head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    if token:
        head += f"Authorization: Bearer {token}\r\n"
    t0 = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall((head + "\r\n").encode())
            got = b""
            while chunk := s.recv(65536):
                got += chunk
        return time.monotonic() - t0 if got.startswith(b"HTTP/1.1 200") else None
    except OSError:
        return None


def good_calls(port, token, n, timeout):
    """(latencies of the answered calls, failures); after 10 failures the rest
    are not tried (each would wait `timeout`) and count as failed."""
    lat, failed = [], 0
    for i in range(n):
        if failed >= 10:
            return lat, n - len(lat)
        r = call(port, "/api/health" if i % 2 == 0 else "/api/streams/cam", token if i % 2 else None, timeout)
        if r is None:
            failed += 1
        else:
            lat.append(r)
    return lat, failed


def connect_from(addr, port, rcvbuf=None):
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind((addr, 0))
    s.connect(("127.0.0.1", port))
    return s


def hostile(port, token, export, stop):
    """64 downloads that never read, 64 heads one byte a second; returns the sockets."""
    ask = f"GET {export} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    stalled = []
    for i in range(HOSTILE):
        # 4 addresses: one address may hold only a quarter of the senders.
        s = connect_from(f"127.0.0.{10 + i % 4}", port, rcvbuf=4096)
        s.sendall(ask)
        stalled.append(s)
    slow = [connect_from("127.0.0.3", port) for _ in range(HOSTILE)]
    head = b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * 200 + b"\r\n\r\n"

    def trickle():
        for b in head:
            if stop.is_set():
                return
            for s in slow:
                try:
                    s.send(bytes([b]))
                except OSError:
                    pass
            time.sleep(1)

    threading.Thread(target=trickle, daemon=True).start()
    return stalled + slow


def ms(v):
    return f"{v * 1000:.2f} ms"


def stats(lat):
    if not lat:
        return "-", "-", "-"
    lat = sorted(lat)
    return ms(statistics.median(lat)), ms(lat[int(len(lat) * 0.95) - 1 if len(lat) > 1 else 0]), ms(lat[-1])


def run(name, binary, calls, timeout):
    work = tempfile.mkdtemp(prefix="bench-slow-")
    cam, cam_port = start_camera()
    proc, port, token = start_recorder(binary, work, cam_port)
    try:
        t0 = int(time.time() * 1000)
        time.sleep(8)
        export = f"/api/export.mp4?stream=cam&start={t0}&end={t0 + 6000}"
        rows = [("alone",) + measure(port, token, calls, timeout)]
        stop = threading.Event()
        socks = hostile(port, token, export, stop)
        time.sleep(1)  # the downloads reach their senders and stall
        rows.append((f"{HOSTILE} stalled downloads + {HOSTILE} slow heads",) + measure(port, token, calls, timeout))
        mem = sample(proc.pid)
        stop.set()
        for s in socks:
            s.close()
        return name, rows, mem
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        cam.terminate()
        cam.wait(timeout=10)


def measure(port, token, calls, timeout):
    t = time.monotonic()
    lat, failed = good_calls(port, token, calls, timeout)
    return lat, failed, time.monotonic() - t


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--calls", type=int, default=200, help="good calls per phase")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds before a call counts as failed")
    p.add_argument("--compare", action="append", default=[], help="NAME=path/to/other/oxinvr")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    a = p.parse_args()
    binaries = [("oxinvr", BIN)] + [tuple(c.split("=", 1)) for c in a.compare]
    results = [run(name, path, a.calls, a.timeout) for name, path in binaries]
    rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    lines = [f"# API latency with hostile clients ({datetime.date.today()})", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores; `scripts/bench-slow-clients` at "
             f"{rev.stdout.strip()}, default `[web]` limits. Good client on 127.0.0.1: {a.calls} calls per phase, "
             "`GET /api/health` and an authenticated `GET /api/streams/cam` in turn, one connection each; "
             f"a call with no answer in {a.timeout:g} s fails. Hostile: {HOSTILE} clients on 127.0.0.10-13 ask for "
             f"a ~6 MB export and never read; {HOSTILE} on 127.0.0.3 send a head one byte a second.", "",
             "| binary | phase | answered | failed | median | p95 | max | phase took |",
             "|---|---|---|---|---|---|---|---|"]
    for name, rows, mem in results:
        for phase, lat, failed, took in rows:
            med, p95, mx = stats(lat)
            lines.append(f"| {name} | {phase} | {len(lat)} | {failed} | {med} | {p95} | {mx} | {took:.1f} s |")
    lines.append("")
    for name, _, mem in results:
        lines.append(f"{name}: {mem['threads']} threads and {mem['rss'] / 2**20:.1f} MiB RSS with the hostile "
                     "clients connected.")
    text = "\n".join(lines) + "\n"
    os.makedirs(a.out, exist_ok=True)
    out = os.path.join(a.out, f"slow-clients-{datetime.date.today()}.md")
    with open(out, "w") as f:
        f.write(text)
    print(text)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
