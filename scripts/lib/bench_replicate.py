"""Replication benchmark (scripts/bench-replicate): a 3-node Garage cluster made with
its CLI (as tests/common/garage.rs does), N streams from one shared test camera, the
release binary replicating to node 0. Over the window: uploaded vs recorded bytes,
CPU % of one core of the `replicate` thread and of the process, and close-to-present
latency per segment (replicate_queue.done_ms - segments.end_ms). Medians and p90 go
to bench/results/replicate-<date>-<streams>.md."""

import argparse
import datetime
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import (BIN, ROOT, cpu_by_thread, cpu_seconds, free_port, get_json, run_recorder,  # noqa: E402
                   start_cameras, stop_cameras, stop_process, stream_urls)

ACCESS, SECRET, BUCKET = "GK0123456789abcdef01234567", "0123456789abcdef" * 4, "bench"


def garage(cli, cfg, *args, tries=60):
    for _ in range(tries):
        r = subprocess.run([cli, "-c", cfg, *args], capture_output=True, text=True)
        if r.returncode == 0:
            return r.stdout
        time.sleep(0.5)
    sys.exit(f"garage {args}: {r.stdout}{r.stderr}")


def start_garage(cli, work):
    secret = os.urandom(32).hex()
    nodes = []
    for i in range(3):
        d = os.path.join(work, f"garage{i}")
        os.makedirs(d)
        rpc, s3, admin = free_port(), free_port(), free_port()
        cfg = os.path.join(d, "garage.toml")
        with open(cfg, "w") as f:
            f.write(f'metadata_dir = "{d}/meta"\ndata_dir = "{d}/data"\ndb_engine = "sqlite"\n'
                    f'replication_factor = 3\nrpc_bind_addr = "127.0.0.1:{rpc}"\n'
                    f'rpc_public_addr = "127.0.0.1:{rpc}"\nrpc_secret = "{secret}"\n'
                    f'[s3_api]\ns3_region = "garage"\napi_bind_addr = "127.0.0.1:{s3}"\n'
                    f'root_domain = ".s3.garage.localhost"\n[admin]\napi_bind_addr = "127.0.0.1:{admin}"\n')
        log = open(os.path.join(d, "garage.log"), "w")
        p = subprocess.Popen([cli, "-c", cfg, "server"], stdout=subprocess.DEVNULL, stderr=log,
                             env={**os.environ, "RUST_LOG": "garage=warn"})
        nodes.append((p, cfg, s3))
    ids = [next(l for l in garage(cli, n[1], "node", "id", "-q").splitlines() if "@" in l).strip() for n in nodes]
    c0 = nodes[0][1]
    for i in ids[1:]:
        garage(cli, c0, "node", "connect", i)
    for i in ids:
        garage(cli, c0, "layout", "assign", "-z", "dc1", "-c", "10G", i.split("@")[0])
    garage(cli, c0, "layout", "apply", "--version", "1")
    garage(cli, c0, "bucket", "create", BUCKET)
    garage(cli, c0, "key", "import", "--yes", "-n", "bench", ACCESS, SECRET)
    garage(cli, c0, "bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", ACCESS)
    return nodes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clip", required=True)
    ap.add_argument("--garage", required=True)
    ap.add_argument("--streams", type=int, default=16)
    ap.add_argument("--seconds", type=int, default=120)
    ap.add_argument("--parallel", type=int, default=4, help="[replicate] parallel_uploads")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench-replicate-", dir=os.path.join(ROOT, "bench"))
    nodes = start_garage(a.garage, work)
    cams = start_cameras(a.clip, 1)
    try:
        streams = "".join(f'[[streams]]\nname = "cam{i}"\nurl = "{u}"\nbitrate_kbps = 4000\n'
                          for i, u in enumerate(stream_urls(cams, a.streams)))
        config = ('[storage]\ndata_dir = "{work}/data"\nsegment_seconds = 10\n[web]\nlisten = "127.0.0.1:{port}"\n'
                  f'[replicate]\nendpoint = "http://127.0.0.1:{nodes[0][2]}"\nbucket = "{BUCKET}"\n'
                  f'access_key = "{ACCESS}"\nsecret_key = "{SECRET}"\nprefix = "bench"\nbox = "box1"\n'
                  f'parallel_uploads = {a.parallel}\n' + streams)
        proc, port, token = run_recorder(BIN, work, config)
        time.sleep(30)  # streams up, first segments closed
        t0, cpu0, th0 = time.time(), cpu_seconds(proc.pid), cpu_by_thread(proc.pid)
        g0 = sum(cpu_seconds(p.pid) for p, _, _ in nodes)
        s0 = get_json(port, "/api/system", token)["replicate"]
        start_ms = int(t0 * 1000)
        # The backlog every 2 s: one snapshot at the end may fall in a burst (streams of one
        # camera close their segments together), so the median and the halves say more.
        backlog = []
        while time.time() < t0 + a.seconds:
            time.sleep(2)
            backlog.append(get_json(port, "/api/system", token)["replicate"]["backlog_segments"])
        t1, cpu1, th1 = time.time(), cpu_seconds(proc.pid), cpu_by_thread(proc.pid)
        g1 = sum(cpu_seconds(p.pid) for p, _, _ in nodes)
        s1 = get_json(port, "/api/system", token)["replicate"]
        end_ms = int(t1 * 1000)
        elapsed = t1 - t0
        db = sqlite3.connect(os.path.join(work, "data", "oxinvr.db"))
        recorded = db.execute("SELECT coalesce(sum(bytes), 0), count(*) FROM segments WHERE state = 'closed' "
                              "AND end_ms >= ? AND end_ms < ?", (start_ms, end_ms)).fetchone()
        lat = [r[0] for r in db.execute(
            "SELECT q.done_ms - s.end_ms FROM replicate_queue q JOIN segments s ON s.id = q.segment_id "
            "WHERE q.state = 'done' AND s.end_ms >= ? AND s.end_ms < ?", (start_ms, end_ms))]
        stop_process(proc)
    finally:
        stop_cameras(cams)
        for p, _, _ in nodes:
            p.terminate()
            p.wait()
    up_bytes = s1["uploaded_bytes"] - s0["uploaded_bytes"]
    up_segs = s1["uploaded_segments"] - s0["uploaded_segments"]
    # The dispatcher (`replicate`) and its workers (`replicate-N`).
    rep = lambda th: sum(v for k, v in th.items() if k == "replicate" or k.startswith("replicate-"))  # noqa: E731
    rep_cpu = 100 * (rep(th1) - rep(th0)) / elapsed
    lat.sort()
    r = {
        "streams": a.streams, "parallel_uploads": a.parallel, "seconds": round(elapsed, 1),
        "recorded_mbit_s": round(recorded[0] * 8 / elapsed / 1e6, 2), "recorded_segments": recorded[1],
        "uploaded_mbit_s": round(up_bytes * 8 / elapsed / 1e6, 2), "uploaded_segments": up_segs,
        "per_stream_uploaded_mbit_s": round(up_bytes * 8 / elapsed / 1e6 / a.streams, 3),
        "backlog_end_segments": s1["backlog_segments"], "backlog_end_bytes": s1["backlog_bytes"],
        "backlog_segments_median": statistics.median(backlog), "backlog_segments_max": max(backlog),
        "backlog_median_first_half": statistics.median(backlog[:len(backlog) // 2]),
        "backlog_median_second_half": statistics.median(backlog[len(backlog) // 2:]),
        "replicate_cpu_percent": round(rep_cpu, 2),
        "process_cpu_percent": round(100 * (cpu1 - cpu0) / elapsed, 1),
        "garage_cpu_percent": round(100 * (g1 - g0) / elapsed, 1),
        "latency_ms_median": statistics.median(lat) if lat else None,
        "latency_ms_p90": lat[int(0.9 * (len(lat) - 1))] if lat else None,
        "latency_ms_max": lat[-1] if lat else None, "latency_samples": len(lat),
    }
    print(r, flush=True)
    date = datetime.date.today().isoformat()
    tail = "" if a.parallel == 4 else f"-p{a.parallel}"
    out = os.path.join(ROOT, "bench", "results", f"replicate-{date}-{a.streams}{tail}.md")
    version = subprocess.run([BIN, "--version"], capture_output=True, text=True).stdout.strip()
    with open(out, "w") as f:
        f.write(f"# Replication to a 3-node Garage cluster, {date}\n\n")
        f.write(f"`scripts/bench-replicate --streams {a.streams} --seconds {a.seconds} --parallel {a.parallel}`; "
                f"{version}; "
                f"{platform.machine()}, {os.cpu_count()} cores (shared with other work); Garage "
                f"{subprocess.run([a.garage, '--version'], capture_output=True, text=True).stdout.strip()} "
                "on the same machine, loopback, replication factor 3 (every byte written 3 times).\n\n")
        f.write(f"{a.streams} streams of one looping 1080p30 ~4 Mbit/s H.264 clip (one shared test camera), "
                "10 s segments (each ~5 MB: PutObject, below the 16 MiB multipart threshold), measured once "
                f"over {r['seconds']} s after 30 s of warm-up.\n\n")
        f.write("| figure | value |\n|---|---|\n")
        for k, v in r.items():
            f.write(f"| {k} | {v} |\n")
        f.write("\nlatency = `replicate_queue.done_ms - segments.end_ms`: from the segment's close to its object "
                "and sidecar acknowledged by the bucket (the queue is scanned every second). backlog_*: segments "
                "waiting, sampled every 2 s (the streams share one camera, so their segments close together: a "
                "burst of up to one per stream every 10 s; keeping up = the second half's median no higher than "
                "the first's). replicate_cpu_percent: "
                "the `replicate` dispatcher and its `replicate-N` workers, % of one core; garage_cpu_percent: the "
                "three Garage nodes together.\n")
    shutil.rmtree(work, ignore_errors=True)
    print(out)


if __name__ == "__main__":
    main()
