"""Soak (see scripts/soak): one recorder, N cameras (two of them flapping), live-view
clients that come and go, and the API fuzzer (GET operations, console credential) in
a loop, for --minutes. Every 10 s: the recorder's RSS, open descriptors and threads.
At the end: drift of each (median of the last quarter against the first quarter after
the warm-up), and for every steady camera: one connection, no gap, frames as sent."""
import argparse
import base64
import datetime
import json
import os
import platform
import random
import signal
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

FPS = 10
FLAP_S = 5
SAMPLE_S = 10


def camera(port):
    """A test camera on `port` (every mount shared: one encoder for all its clients)."""
    cam = subprocess.Popen([os.path.join(ROOT, "scripts", "test-camera"), "--port", str(port), "--fps", str(FPS),
                            "--size", "320x240", "--bitrate", "200"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = cam.stdout.readline()
    if "READY" not in line:
        cam.kill()
        sys.exit(f"soak: the test camera on port {port} did not start: {line!r}")
    return cam


def start_recorder(work, urls, binary):
    config = ('[storage]\ndata_dir = "{work}/data"\nsync_seconds = 1\n'
              '[web]\nlisten = "127.0.0.1:{port}"\nmax_live_clients = 16\n')
    for name, url in urls:
        # A small quota: retention deletes all the time, as on a full card.
        config += f'[[streams]]\nname = "{name}"\nurl = "{url}"\nbitrate_kbps = 200\nmax_storage_mb = 40\n'
    return run_recorder(binary, work, config)


def api(port, token, path):
    rq = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(rq, timeout=10) as r:
        return json.load(r)


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_parts(pid):
    """Anonymous, file-backed and shared (the rings on tmpfs) resident bytes: a
    drift in one names its cause."""
    out = {"anon": 0, "file": 0, "shmem": 0}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            for key, field in (("anon", "RssAnon:"), ("file", "RssFile:"), ("shmem", "RssShmem:")):
                if line.startswith(field):
                    out[key] = int(line.split()[1]) * 1024
    return out


def stack_bytes(pid):
    """Resident bytes of thread stacks: anonymous mappings right after a 4 KiB
    PROT_NONE guard page. Counts the stacks glibc caches for reuse after a
    thread ends (up to 40 MiB by default), which no heap figure shows."""
    total, guard_end, cur = 0, None, None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and len(head) >= 5 and ":" not in head[0]:
                lo, hi = (int(x, 16) for x in head[0].split("-"))
                perms, path = head[1], head[5] if len(head) > 5 else ""
                cur = "stack" if (perms == "rw-p" and not path and guard_end == lo) else None
                guard_end = hi if (perms == "---p" and hi - lo == 4096) else None
            elif cur == "stack" and head[0] == "Rss:":
                total += int(head[1]) * 1024
    return total


def flapper(port, stop, log):
    """A camera that is gone FLAP_S seconds, back FLAP_S seconds, until `stop`."""
    while not stop.is_set():
        cam = camera(port)
        stop.wait(FLAP_S)
        cam.send_signal(signal.SIGTERM)
        cam.wait()
        log.append(time.time())
        stop.wait(FLAP_S)


def live_viewer(port, token, names, stop, counts):
    """Connects to a random stream's live view, reads 2-10 s, leaves; again."""
    while not stop.is_set():
        name = random.choice(names)
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            key = base64.b64encode(os.urandom(16)).decode()
            s.sendall((f"GET /api/streams/{name}/live HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                       f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                       f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n").encode())
            until = time.time() + random.uniform(2, 10)
            got = 0
            while time.time() < until and not stop.is_set():
                b = s.recv(65536)
                if not b:
                    break
                got += len(b)
            s.close()
            counts["sessions"] += 1
            counts["bytes"] += got
        except OSError:
            counts["errors"] += 1
            stop.wait(1)


def fuzzer(port, token, stop, counts, work):
    """The API fuzzer (GET operations only: nothing it does changes the recorder)."""
    st = os.environ.get("OXINVR_SCHEMATHESIS") or os.path.expanduser("~/.cache/oxinvr/schemathesis/bin/st")
    while not stop.is_set():
        r = subprocess.run([st, "--no-color", "run", f"http://127.0.0.1:{port}/api/openapi.json",
                            "--include-method", "GET", "--exclude-path-regex", "/live$",
                            "--checks", "not_a_server_error", "--max-examples", "20", "--workers", "1",
                            "-H", f"Authorization: Bearer {token}", "--generation-database", "none"],
                           cwd=work, capture_output=True, text=True)
        counts["runs"] += 1
        if r.returncode != 0:
            counts["failed"] += 1
            with open(os.path.join(work, f"fuzz-failure-{counts['runs']}.txt"), "w") as f:
                f.write(r.stdout + r.stderr)


def drift(series):
    q = max(1, len(series) // 4)
    first, last = statistics.median(series[:q]), statistics.median(series[-q:])
    return first, last, (last - first) * 100.0 / first if first else 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--cameras", type=int, default=16)
    ap.add_argument("--live-viewers", type=int, default=4)
    ap.add_argument("--warmup-minutes", type=float, default=5)
    ap.add_argument("--flapping", type=int, default=2, help="how many of the cameras flap")
    ap.add_argument("--no-fuzz", action="store_true", help="no API fuzzer (to isolate a drift)")
    ap.add_argument("--binary", default=BIN,
                    help="the recorder to soak (default target/release/oxinvr; target/musl/oxinvr is the box's allocator)")
    ap.add_argument("--report", help="where the report goes (default bench/results/soak-<date>.md)")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="oxinvr-soak-")
    steady_ports = [free_port(), free_port()]
    flap_ports = [free_port() for _ in range(a.flapping)]
    cams = [camera(p) for p in steady_ports]
    steady = [(f"cam{i:02}", f"rtsp://127.0.0.1:{steady_ports[i % 2]}/h264") for i in range(a.cameras - a.flapping)]
    flapping = [(f"flap{i}", f"rtsp://127.0.0.1:{p}/h264") for i, p in enumerate(flap_ports)]
    stop = threading.Event()
    flaps = [[] for _ in flap_ports]
    threads = [threading.Thread(target=flapper, args=(p, stop, flaps[i]), daemon=True)
               for i, p in enumerate(flap_ports)]
    for t in threads:
        t.start()
    proc, port, token = start_recorder(work, steady + flapping, a.binary)
    names = [n for n, _ in steady + flapping]
    print(f"soak: {a.cameras} cameras, {a.minutes} min, work dir {work}", flush=True)
    # Only once every steady stream records is anything measured.
    deadline = time.time() + 120
    while time.time() < deadline:
        streams = api(port, token, "/api/streams")["streams"]
        if all((s.get("status") or {}).get("frames", 0) > 0 for s in streams if s["name"].startswith("cam")):
            break
        time.sleep(1)
    else:
        sys.exit("soak: not every steady stream recorded within 2 minutes")
    began = time.time()
    start_frames = {s["name"]: s["status"]["frames"] for s in api(port, token, "/api/streams")["streams"]}
    live = {"sessions": 0, "bytes": 0, "errors": 0}
    fuzz = {"runs": 0, "failed": 0}
    for _ in range(a.live_viewers):
        threading.Thread(target=live_viewer, args=(port, token, names, stop, live), daemon=True).start()
    if not a.no_fuzz:
        threading.Thread(target=fuzzer, args=(port, token, stop, fuzz, work), daemon=True).start()
    samples = []
    end = began + a.minutes * 60
    while time.time() < end:
        if proc.poll() is not None:
            sys.exit(f"soak: the recorder exited ({proc.returncode}); see {work}/oxinvr.log")
        s = sample(proc.pid)
        s.update(t=time.time() - began, fds=fds(proc.pid), stacks=stack_bytes(proc.pid), **rss_parts(proc.pid))
        mem = api(port, token, "/api/system")["memory"]
        s.update(heap=sum(mem["heap_by_subsystem"].values()), sqlite=mem["sqlite_bytes"])
        m = mem["process"].get("malloc") or {}
        s.update(malloc_in_use=m.get("in_use", 0), malloc_free=m.get("free", 0))
        samples.append(s)
        print(f"  {s['t']:7.0f} s  rss {s['rss'] / 1048576:6.1f} MiB (anon {s['anon'] / 1048576:5.1f}, file "
              f"{s['file'] / 1048576:5.1f}, stacks {s['stacks'] / 1048576:5.1f}, shmem {s['shmem'] / 1048576:5.1f}, heap {s['heap'] / 1048576:5.1f}, sqlite {s['sqlite'] / 1048576:4.1f}, malloc in use {s['malloc_in_use'] / 1048576:4.1f} free {s['malloc_free'] / 1048576:4.1f})  "
              f"pss {s['pss'] / 1048576:6.1f} MiB  fds {s['fds']:4}  threads {s['threads']:3}  "
              f"live {live['sessions']}  fuzz runs {fuzz['runs']} (failed {fuzz['failed']})", flush=True)
        time.sleep(SAMPLE_S)
    elapsed = time.time() - began
    streams = {s["name"]: s for s in api(port, token, "/api/streams")["streams"]}
    stop.set()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    for c in cams:
        c.send_signal(signal.SIGTERM)
    report(a, work, samples, elapsed, streams, start_frames, steady, flaps, live, fuzz)


def report(a, work, samples, elapsed, streams, start_frames, steady, flaps, live, fuzz):
    measured = [s for s in samples if s["t"] >= a.warmup_minutes * 60] or samples
    rows = []
    for key, unit, scale in [("rss", "MiB", 1 / 1048576), ("anon", "MiB", 1 / 1048576),
                             ("file", "MiB", 1 / 1048576), ("stacks", "MiB", 1 / 1048576),
                             ("shmem", "MiB", 1 / 1048576),
                             ("heap", "MiB", 1 / 1048576),
                             ("sqlite", "MiB", 1 / 1048576), ("malloc_in_use", "MiB", 1 / 1048576),
                             ("malloc_free", "MiB", 1 / 1048576), ("pss", "MiB", 1 / 1048576), ("fds", "", 1),
                             ("threads", "", 1)]:
        first, last, pct = drift([s[key] for s in measured])
        rows.append(f"| {key} | {first * scale:.1f} {unit} | {last * scale:.1f} {unit} | {pct:+.1f} % |")
    cams = []
    worst = 0.0
    for name, _ in steady:
        st = streams[name]["status"]
        got = st["frames"] - start_frames.get(name, 0)
        expected = elapsed * FPS
        lost = max(0.0, (expected - got) * 100.0 / expected)
        worst = max(worst, lost)
        cams.append(f"| {name} | {st['connects']} | {st['gaps']} | {got} | {expected:.0f} | {st['storage_lag_max_ms']} |")
    flap_rows = [f"| {n} | {streams[n]['status']['connects']} | {len(flaps[i])} |"
                 for i, n in enumerate(sorted(n for n in streams if n.startswith("flap")))]
    date = datetime.date.today().isoformat()
    out = a.report or os.path.join(ROOT, "bench", "results", f"soak-{date}.md")
    with open(out, "w") as f:
        binary = "" if a.binary == BIN else f" --binary {os.path.relpath(a.binary, ROOT)}"
        f.write(f"# Soak, {date}\n\n`scripts/soak --minutes {a.minutes:g} --cameras {a.cameras}{binary}` on {platform.node()} "
                f"({os.cpu_count()} cores): {a.cameras} cameras ({a.cameras - a.flapping} steady from two test cameras, "
                f"{a.flapping} flapping {FLAP_S} s gone / {FLAP_S} s back), 320x240 {FPS} fps ~200 kbit/s each, 40 MB quota "
                f"per stream (retention deletes throughout), {a.live_viewers} live viewers coming and going, "
                f"{'no API fuzzer' if a.no_fuzz else 'the API fuzzer (GET operations) in a loop'}. Measured for {elapsed / 60:.1f} min after every steady "
                f"stream recorded; drift compares the median of the last quarter with the first quarter after a "
                f"{a.warmup_minutes:g} min warm-up (samples every {SAMPLE_S} s).\n\n")
        f.write("| | first quarter | last quarter | drift |\n|---|---|---|---|\n" + "\n".join(rows) + "\n\n")
        f.write(f"Live view: {live['sessions']} sessions, {live['bytes'] / 1e6:.0f} MB read, {live['errors']} "
                f"connection errors. API fuzzer: {fuzz['runs']} runs, {fuzz['failed']} with a 5xx "
                f"(details in the work dir).\n\n")
        f.write("Steady cameras (frames received since the start of measuring vs sent at "
                f"{FPS} fps; worst shortfall {worst:.2f} %):\n\n"
                "| stream | connects | gaps | frames | sent | storage lag max (ms) |\n|---|---|---|---|---|---|\n"
                + "\n".join(cams) + "\n\n")
        f.write("Flapping cameras:\n\n| stream | connects | cuts |\n|---|---|---|\n" + "\n".join(flap_rows) + "\n")
    print(open(out).read())
    print(f"soak: written to {out}")


if __name__ == "__main__":
    main()
