"""Start-up with a full disk's worth of history (see scripts/bench-startup):
16 streams x 30 days of 5-minute segments (138,240 rows and files), against the
same streams with one segment each. Measures time to /api/health, the log's
reconcile time and the peak RSS (VmHWM) 12 s after start (the first retention
plan, over every row, runs at 10 s). Cameras are off during the runs: start-up
must not depend on them."""
import argparse
import datetime
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import ROOT, free_port, kb  # noqa: E402

STREAMS = 16


def wait_health(port, proc, limit=300):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if proc.poll() is not None:
            sys.exit(f"bench-startup: oxinvr exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.02)
    sys.exit("bench-startup: /api/health did not answer")


def hwm(pid):
    with open(f"/proc/{pid}/status") as f:
        return kb(f.read(), "VmHWM:")


def start_once(binary, cfg, port, logpath):
    with open(logpath, "w") as log:
        t0 = time.monotonic()
        proc = subprocess.Popen([binary, "run", "--config", cfg], stdout=subprocess.DEVNULL, stderr=log)
        wait_health(port, proc)
        t_health = time.monotonic() - t0
        time.sleep(12)
        peak = hwm(proc.pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    text = open(logpath).read()
    m = re.search(r"reconciled (\d+) segments in ([\d.]+)(µs|ms|s)", text)
    scale = {"µs": 1e-6, "ms": 1e-3, "s": 1.0}
    recon = float(m.group(2)) * scale[m.group(3)] if m else float("nan")
    return {"health_s": t_health, "reconcile_s": recon, "segments": int(m.group(1)) if m else 0, "hwm": peak}


def record_seed(binary, data, cfg, port):
    cam_port = free_port()
    cam = subprocess.Popen([os.path.join(ROOT, "scripts", "test-camera"), "--port", str(cam_port)],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if "READY" not in cam.stdout.readline():
        sys.exit("bench-startup: the test camera did not start")
    write_config(cfg, data, port, cam_port, segment_seconds=2)
    with open(os.path.join(os.path.dirname(cfg), "seed.log"), "w") as log:
        nvr = subprocess.Popen([binary, "run", "--config", cfg], stdout=subprocess.DEVNULL, stderr=log)
        wait_health(port, nvr)
        time.sleep(STREAMS * 0.5 + 12)
        nvr.send_signal(signal.SIGTERM)
        nvr.wait(timeout=60)
    cam.send_signal(signal.SIGTERM)
    cam.wait(timeout=10)


def write_config(cfg, data, port, cam_port, segment_seconds=300):
    with open(cfg, "w") as f:
        f.write(f'[storage]\ndata_dir = "{data}"\nsegment_seconds = {segment_seconds}\n')
        f.write(f'[web]\nlisten = "127.0.0.1:{port}"\n')
        for i in range(STREAMS):
            f.write(f'[[streams]]\nname = "s{i:02}"\nurl = "rtsp://127.0.0.1:{cam_port}/h264"\nbitrate_kbps = 1000\n')


def measure(label, binaries, cfg, port, runs, work):
    out = {}
    for name, binary in binaries:
        rs = [start_once(binary, cfg, port, os.path.join(work, f"{label}-{name}-{i}.log")) for i in range(runs)]
        out[name] = {k: statistics.median(r[k] for r in rs) for k in ("health_s", "reconcile_s", "hwm")}
        out[name]["segments"] = rs[0]["segments"]
        print(f"{label} {name}: {out[name]}", flush=True)
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--compare", action="append", default=[], metavar="NAME=BINARY",
                   help="another oxinvr binary measured side by side (e.g. the previous release)")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    a = p.parse_args()
    binaries = [("oxinvr", os.path.join(ROOT, "target", "release", "oxinvr"))]
    binaries += [tuple(c.split("=", 1)) for c in a.compare]
    work = os.path.join(ROOT, "target", "bench-startup")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    data, cfg, port = os.path.join(work, "data"), os.path.join(work, "oxinvr.toml"), free_port()
    record_seed(binaries[0][1], data, cfg, port)
    write_config(cfg, data, port, free_port())  # a camera port nobody listens on
    small = measure("seed", binaries, cfg, port, a.runs, work)
    per_stream = a.days * 288
    t0 = time.monotonic()
    subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "scripts", "lib", "fill_history.py"), "--data", data,
                    "--count", str(per_stream), "--segment-seconds", "300", "--fragments", "300"], check=True)
    fill_s = time.monotonic() - t0
    db_mb = os.path.getsize(os.path.join(data, "oxinvr.db")) / 2**20
    full = measure("full", binaries, cfg, port, a.runs, work)

    day = datetime.date.today().isoformat()
    path = os.path.join(a.out, f"startup-{day}.md")
    with open(path, "w") as f:
        f.write(f"# Start-up with {a.days} days of history ({day})\n\n")
        f.write(f"Machine: {platform.machine()}, {os.cpu_count()} cores; `scripts/bench-startup` "
                f"(medians of {a.runs} runs; cameras off).\n")
        f.write(f"History: {STREAMS} streams x {per_stream} five-minute segments = {STREAMS * per_stream} rows "
                f"and files (hard links), fragment index of 300 entries each; database {db_mb:.0f} MB "
                f"(made in {fill_s:.0f} s).\n\n")
        f.write("| binary | history | segments | to /api/health | reconcile | peak RSS at 12 s |\n|---|---|---|---|---|---|\n")
        for label, res in (("1 segment/stream", small), (f"{a.days} days", full)):
            for name, r in res.items():
                f.write(f"| {name} | {label} | {r['segments']} | {r['health_s']:.2f} s | {r['reconcile_s']:.2f} s "
                        f"| {r['hwm'] / 2**20:.1f} MiB |\n")
        for name in small:
            extra = (full[name]["hwm"] - small[name]["hwm"]) / 2**20
            f.write(f"\n{name}: {a.days} days of history cost {full[name]['health_s'] - small[name]['health_s']:.2f} s "
                    f"more to start and {extra:.1f} MiB more peak memory.\n")
    print(f"bench-startup: wrote {path}")


if __name__ == "__main__":
    main()
