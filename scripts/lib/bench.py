"""Measures the release binary recording N replayed 1080p streams (see scripts/bench)."""
import argparse
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

import bench_moonfire

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "target", "release", "oxinvr")
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def cpu_by_thread(pid):
    """CPU seconds per thread name (threads of one name summed)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        name = raw[raw.index("(") + 1:raw.rindex(")")]
        fields = raw.rsplit(")", 1)[1].split()
        out[name] = out.get(name, 0) + (int(fields[11]) + int(fields[12])) / TICK
    return out


def kb(text, name):
    for line in text.splitlines():
        if line.startswith(name):
            return int(line.split()[1]) * 1024
    return 0


def run_recorder(binary, work, config):
    """Starts `binary run` on `config` (a format string with {port} and {work}) in
    `work`; returns (process, port, console token) once /api/health answers.
    `binary` may carry a runner before it ("qemu-mipsel-static /path/oxinvr")."""
    port = free_port()
    cfg = os.path.join(work, "oxinvr.toml")
    with open(cfg, "w") as f:
        f.write(config.format(port=port, work=work))
    log = open(os.path.join(work, "oxinvr.log"), "w")
    proc = subprocess.Popen(shlex.split(binary) + ["run", "--config", cfg], stdout=subprocess.DEVNULL, stderr=log)
    for _ in range(600):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=1):
                break
        except OSError:
            time.sleep(0.1)
    with open(os.path.join(work, "data", "console.token")) as f:
        token = f.read().strip()
    return proc, port, token


def sample(pid):
    with open(f"/proc/{pid}/status") as f:
        status = f.read()
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            pss = kb(f.read(), "Pss:")
    except OSError:
        pss = 0
    threads = int(next(l.split()[1] for l in status.splitlines() if l.startswith("Threads:")))
    return {"rss": kb(status, "VmRSS:"), "hwm": kb(status, "VmHWM:"), "pss": pss, "threads": threads}


def write_bytes(pid):
    with open(f"/proc/{pid}/io") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("write_bytes:"))


def get_json(port, path, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    rq = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    with urllib.request.urlopen(rq, timeout=10) as r:
        return json.load(r)


def console_token(data_dir, deadline):
    """The console token the recorder writes at start (the API needs a credential)."""
    path = os.path.join(data_dir, "console.token")
    while time.time() < deadline:
        try:
            with open(path) as f:
                token = f.read().strip()
            if token:
                return token
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit(f"bench: no console token at {path}")


def start_cameras(clip, count):
    """Starts `count` test cameras replaying `clip` (all spawned first, then each
    waited for); returns [(process, port)]."""
    def spawn():
        port = free_port()
        return (subprocess.Popen([os.path.join(ROOT, "scripts", "test-camera"), "--port", str(port),
                                  "--replay", clip], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                 text=True), port)

    cams = [spawn() for _ in range(count)]
    for i in range(count):
        # Once more on a new port: a port free_port() found free can be taken before
        # the camera binds it (64 cameras start at once, others' tests run too).
        for attempt in range(2):
            line = cams[i][0].stdout.readline()
            if "READY" in line:
                break
            cams[i][0].wait()
            if attempt == 0:
                cams[i] = spawn()
        else:
            stop_cameras(cams)
            sys.exit(f"bench: a test camera did not start: {line!r}")
    return cams


def stop_cameras(cams):
    for cam, _ in cams:
        cam.terminate()
    for cam, _ in cams:
        try:
            cam.wait(10)
        except subprocess.TimeoutExpired:
            cam.kill()


def stream_urls(cams, n):
    """One URL per stream: each its own camera (own source pipeline) when there are
    n cameras, else all on the one shared camera's mount."""
    return [f"rtsp://127.0.0.1:{cams[i % len(cams)][1]}/replay" for i in range(n)]


def stop_process(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def measure(pid, cams, seconds):
    """Samples `pid` once a second for `seconds` (after 3 s to settle): CPU over the
    window, median and peak of PSS/RSS, thread count, CPU per thread name."""
    time.sleep(3)  # let every stream settle into steady state
    cam_cpu = lambda: sum(cpu_seconds(c.pid) for c, _ in cams)  # noqa: E731
    cpu0, wb0, cam0, t0 = cpu_seconds(pid), write_bytes(pid), cam_cpu(), time.time()
    threads0 = cpu_by_thread(pid)
    samples = []
    while time.time() - t0 < seconds:
        time.sleep(1)
        samples.append(sample(pid))
    cpu1, wb1, cam1, t1 = cpu_seconds(pid), write_bytes(pid), cam_cpu(), time.time()
    threads1 = cpu_by_thread(pid)
    elapsed = t1 - t0
    return {
        "seconds": round(elapsed, 1),
        "cpu_s": cpu1 - cpu0,
        "cpu_percent_of_one_core": round(100 * (cpu1 - cpu0) / elapsed, 1),
        "camera_cpu_percent": round(100 * (cam1 - cam0) / elapsed, 1),
        "peak_rss_mb": round(max(s["hwm"] for s in samples) / 2**20, 1),
        "peak_pss_mb": round(max(s["pss"] for s in samples) / 2**20, 1),
        "median_pss_mb": round(statistics.median(s["pss"] for s in samples) / 2**20, 1),
        "median_rss_mb": round(statistics.median(s["rss"] for s in samples) / 2**20, 1),
        "threads": max(s["threads"] for s in samples),
        "write_mb_per_s": round((wb1 - wb0) / elapsed / 2**20, 2),
        "cpu_percent_by_thread": {k: round(100 * (v - threads0.get(k, 0)) / elapsed, 2)
                                  for k, v in sorted(threads1.items()) if v - threads0.get(k, 0) > 0},
    }


def run_one(n, seconds, cams, workdir):
    """OxiNVR recording n streams from `cams`."""
    urls = stream_urls(cams, n)
    port = free_port()
    data = os.path.join(workdir, f"n{n}")
    shutil.rmtree(data, ignore_errors=True)
    os.makedirs(data)
    cfg = os.path.join(data, "oxinvr.toml")
    with open(cfg, "w") as f:
        f.write(f'[storage]\ndata_dir = "{data}/data"\nsegment_seconds = 60\n[web]\nlisten = "127.0.0.1:{port}"\n')
        for i, url in enumerate(urls):
            f.write(f'[[streams]]\nname = "s{i:02}"\nurl = "{url}"\nbitrate_kbps = 4000\n')
    log = open(os.path.join(data, "oxinvr.log"), "w")
    spawned = time.time()
    nvr = subprocess.Popen([BIN, "run", "--config", cfg], stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.time() + 30 + 3 * n
        token = console_token(os.path.join(data, "data"), deadline)
        while True:
            try:
                streams = get_json(port, "/api/streams", token)
                up = sum(1 for s in streams["streams"] if s["status"]["state"] == "streaming" and s["status"]["frames"] > 0)
                if up == n:
                    retries = sum(s["status"]["connects"] for s in streams["streams"]) - n
                    break
            except OSError:
                pass
            if time.time() > deadline or nvr.poll() is not None:
                sys.exit(f"bench: only some of {n} streams came up; see {log.name}")
            time.sleep(0.1)
        # Bring-up: from starting the process to every stream having recorded a frame.
        bringup_s = time.time() - spawned
        m = measure(nvr.pid, cams, seconds)
        system = get_json(port, "/api/system", token)
        streams = get_json(port, "/api/streams", token)["streams"]
        rings = system["memory"].get("rings_bytes", 0) / 2**20
        return {
            "recorder": "oxinvr",
            "streams": n,
            "sources": len(cams),
            "bringup_s": round(bringup_s, 2),
            "bringup_retries": retries,
            "cpu_s_per_stream_s": round(m["cpu_s"] / (n * m["seconds"]), 5),
            **{k: v for k, v in m.items() if k != "cpu_s"},
            "median_stream_fps": round(statistics.median(s["status"]["fps"] for s in streams), 1),
            "median_stream_kbps": round(statistics.median(s["status"]["bitrate_kbps"] for s in streams)),
            "rings_mb": round(rings, 1),
            "median_pss_without_rings_mb": round(m["median_pss_mb"] - rings, 1),
        }
    finally:
        stop_process(nvr)
        shutil.rmtree(os.path.join(data, "data"), ignore_errors=True)


def run_moonfire(binary, n, seconds, cams, workdir):
    """Moonfire NVR recording n streams from `cams` (as many as OxiNVR had)."""
    root = os.path.join(workdir, f"moonfire-n{n}")
    cfg = bench_moonfire.setup(binary, root, stream_urls(cams, n))
    proc, bringup_s, retries = bench_moonfire.start(binary, cfg, n, os.path.join(root, "moonfire.log"), 30 + 3 * n)
    try:
        m = measure(proc.pid, cams, seconds)
        return {"recorder": "moonfire", "streams": n, "sources": len(cams), "bringup_s": round(bringup_s, 2),
                "bringup_retries": retries, "cpu_s_per_stream_s": round(m["cpu_s"] / (n * m["seconds"]), 5),
                **{k: v for k, v in m.items() if k != "cpu_s"}}
    finally:
        stop_process(proc)
        shutil.rmtree(os.path.join(root, "sample"), ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clip", required=True)
    ap.add_argument("--streams", default="1 8 32 64")
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--sources", choices=["shared", "per-stream"], default="shared",
                    help="one test camera for all streams, or one camera (own source pipeline) per stream")
    ap.add_argument("--moonfire", metavar="BINARY", help="also measure this Moonfire NVR binary on as many fresh cameras")
    a = ap.parse_args()
    workdir = os.path.join(ROOT, "bench", "tmp")
    os.makedirs(workdir, exist_ok=True)
    results = []
    recorders = [lambda n, cams: run_one(n, a.seconds, cams, workdir)]
    if a.moonfire:
        recorders.append(lambda n, cams: run_moonfire(a.moonfire, n, a.seconds, cams, workdir))
    for n in [int(x) for x in a.streams.split()]:
        for run in recorders:
            # Fresh cameras for each recorder: a test camera the previous recorder has just
            # left can take over 30 s to give a new client its first frame.
            cams = start_cameras(a.clip, n if a.sources == "per-stream" else 1)
            try:
                r = run(n, cams)
            finally:
                stop_cameras(cams)
            print(json.dumps(r), flush=True)
            results.append(r)
    version = subprocess.run([BIN, "--version"], capture_output=True, text=True).stdout.strip()
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "version": version,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.node()}",
        "clip": os.path.basename(a.clip),
        "clip_probe": subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                                      "stream=codec_name,profile,width,height,r_frame_rate,bit_rate,has_b_frames",
                                      "-of", "compact=p=0:nk=0", a.clip], capture_output=True, text=True).stdout.strip(),
        "command": "scripts/bench " + shlex.join(sys.argv[3:]),  # argv[1:3] is the --clip scripts/bench adds
    }
    if a.moonfire:
        write_comparison(meta, results, a)
    else:
        write_results(meta, results, a)


def write_comparison(meta, results, a):
    """bench/results/moonfire-DATE.{json,md}: OxiNVR and Moonfire side by side."""
    out_dir = os.path.join(ROOT, "bench", "results")
    os.makedirs(out_dir, exist_ok=True)
    stamp = meta["date"][:10]
    with open(os.path.join(out_dir, f"moonfire-{stamp}.json"), "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=2)
    cols = ["streams", "recorder", "sources", "bringup_s", "bringup_retries", "median_pss_mb", "median_pss_without_rings_mb",
            "rings_mb", "peak_pss_mb", "cpu_s_per_stream_s", "cpu_percent_of_one_core", "threads",
            "write_mb_per_s", "camera_cpu_percent"]
    with open(os.path.join(out_dir, f"moonfire-{stamp}.md"), "w") as f:
        f.write(f"# OxiNVR and Moonfire NVR side by side, {meta['date']}\n\n")
        f.write(f"{meta['version']} and Moonfire NVR at {a.moonfire} on {meta['machine']}.\n")
        f.write(f"Source: {meta['clip']} ({meta['clip_probe']}), replayed without re-encoding by "
                f"{'one test camera per stream' if a.sources == 'per-stream' else 'one shared test camera'}; "
                "each recorder reads freshly started cameras of the same kind and number, one recorder after the other.\n")
        f.write(f"Command: `{meta['command']}`\n\n")
        f.write(f"Each row: {a.seconds} s window, sampled every second, 3 s after every stream was up "
                "(OxiNVR: its API shows every stream with frames; Moonfire: its log shows every stream's first "
                "key frame). bringup_s: from starting the process to every stream up; bringup_retries: camera connections "
                "tried again before that (OxiNVR: its streams' `connects` less one each; Moonfire: its "
                "`sleeping for 1 s after error` log lines). PSS from smaps_rollup "
                "(median of the samples); rings from OxiNVR's /api/system; CPU from /proc/PID/stat over the "
                "window.\n\n")
        f.write("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n")
        for r in results:
            f.write("| " + " | ".join(str(r.get(c, "-")) for c in cols) + " |\n")
        f.write("\nRatios OxiNVR / Moonfire:\n\n")
        for n in sorted({r["streams"] for r in results}):
            o = next(r for r in results if r["streams"] == n and r["recorder"] == "oxinvr")
            m = next(r for r in results if r["streams"] == n and r["recorder"] == "moonfire")
            f.write(f"- {n} streams: PSS {o['median_pss_mb'] / m['median_pss_mb']:.2f}, PSS without rings "
                    f"{o['median_pss_without_rings_mb'] / m['median_pss_mb']:.2f}, CPU per stream "
                    f"{o['cpu_s_per_stream_s'] / m['cpu_s_per_stream_s']:.2f}, bring-up "
                    f"{o['bringup_s']:.1f} s vs {m['bringup_s']:.1f} s\n")
        f.write("\nCPU % of one core by thread name (digits shown as N; Moonfire runs its streams as tasks "
                "on its tokio workers, `tokio-runtime-w`):\n\n")
        for r in results:
            f.write(f"- {r['recorder']}, {r['streams']} streams: {by_thread_kind(r['cpu_percent_by_thread'])}\n")
    print(f"bench: results in {out_dir}/moonfire-{stamp}.md")


def by_thread_kind(by_name):
    """Sums CPU % of threads whose names differ only in their digits."""
    out = {}
    for name, pct in by_name.items():
        key = re.sub(r"\d+", "N", name)
        out[key] = round(out.get(key, 0) + pct, 2)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def write_results(meta, results, a):
    """bench/results/recording-DATE.{json,md}: OxiNVR alone."""
    out_dir = os.path.join(ROOT, "bench", "results")
    os.makedirs(out_dir, exist_ok=True)
    stamp = meta["date"][:10]
    with open(os.path.join(out_dir, f"recording-{stamp}.json"), "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=2)
    cols = ["streams", "bringup_s", "cpu_s_per_stream_s", "cpu_percent_of_one_core", "peak_rss_mb", "peak_pss_mb",
            "threads", "write_mb_per_s", "median_stream_fps", "median_stream_kbps", "rings_mb", "camera_cpu_percent"]
    with open(os.path.join(out_dir, f"recording-{stamp}.md"), "w") as f:
        f.write(f"# Recording benchmark, {meta['date']}\n\n{meta['version']} on {meta['machine']}.\n")
        f.write(f"Source: {meta['clip']} ({meta['clip_probe']}), replayed without re-encoding.\n")
        f.write(f"Each row: {a.seconds} s of steady-state recording after every stream produced frames; "
                "bringup_s is the time from starting the process to every stream having a frame.\n\n")
        f.write("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n")
        for r in results:
            f.write("| " + " | ".join(str(r[c]) for c in cols) + " |\n")
        f.write("\nCPU % of one core by thread (`async-compat/to` is the tokio reactor that bridges retina to smol):\n\n")
        for r in results:
            f.write(f"- {r['streams']} streams: {r['cpu_percent_by_thread']}\n")
    print(f"bench: results in {out_dir}/recording-{stamp}.md")


if __name__ == "__main__":
    main()
