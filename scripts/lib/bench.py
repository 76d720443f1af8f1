"""Measures the release binary recording N replayed 1080p streams (see scripts/bench)."""
import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

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


def get_json(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return json.load(r)


def start_camera(clip):
    port = free_port()
    cam = subprocess.Popen([os.path.join(ROOT, "scripts", "test-camera"), "--port", str(port), "--replay", clip],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = cam.stdout.readline()
    if "READY" not in line:
        cam.kill()
        sys.exit(f"bench: the test camera did not start: {line!r}")
    return cam, port


def run_one(n, seconds, clip, workdir):
    cam, cam_port = start_camera(clip)
    port = free_port()
    data = os.path.join(workdir, f"n{n}")
    shutil.rmtree(data, ignore_errors=True)
    os.makedirs(data)
    cfg = os.path.join(data, "oxinvr.toml")
    with open(cfg, "w") as f:
        f.write(f'[storage]\ndata_dir = "{data}/data"\nsegment_seconds = 60\n[web]\nlisten = "127.0.0.1:{port}"\n')
        for i in range(n):
            f.write(f'[[streams]]\nname = "s{i:02}"\nurl = "rtsp://127.0.0.1:{cam_port}/replay"\nbitrate_kbps = 4000\n')
    log = open(os.path.join(data, "oxinvr.log"), "w")
    spawned = time.time()
    nvr = subprocess.Popen([BIN, "run", "--config", cfg], stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.time() + 30 + 3 * n
        while True:
            try:
                streams = get_json(port, "/api/streams")
                up = sum(1 for s in streams["streams"] if s["status"]["state"] == "streaming" and s["status"]["frames"] > 0)
                if up == n:
                    break
            except OSError:
                pass
            if time.time() > deadline or nvr.poll() is not None:
                sys.exit(f"bench: only some of {n} streams came up; see {log.name}")
            time.sleep(0.1)
        # Bring-up: from starting the process to every stream having recorded a frame.
        bringup_s = time.time() - spawned
        time.sleep(3)  # let every stream settle into steady state
        cpu0, wb0, cam0, t0 = cpu_seconds(nvr.pid), write_bytes(nvr.pid), cpu_seconds(cam.pid), time.time()
        threads0 = cpu_by_thread(nvr.pid)
        samples = []
        while time.time() - t0 < seconds:
            time.sleep(1)
            samples.append(sample(nvr.pid))
        cpu1, wb1, cam1, t1 = cpu_seconds(nvr.pid), write_bytes(nvr.pid), cpu_seconds(cam.pid), time.time()
        threads1 = cpu_by_thread(nvr.pid)
        system = get_json(port, "/api/system")
        elapsed = t1 - t0
        streams = get_json(port, "/api/streams")["streams"]
        fps = statistics.median(s["status"]["fps"] for s in streams)
        kbps = statistics.median(s["status"]["bitrate_kbps"] for s in streams)
        return {
            "streams": n,
            "seconds": round(elapsed, 1),
            "bringup_s": round(bringup_s, 2),
            "cpu_s_per_stream_s": round((cpu1 - cpu0) / (n * elapsed), 5),
            "cpu_percent_of_one_core": round(100 * (cpu1 - cpu0) / elapsed, 1),
            "camera_cpu_percent": round(100 * (cam1 - cam0) / elapsed, 1),
            "peak_rss_mb": round(max(s["hwm"] for s in samples) / 2**20, 1),
            "peak_pss_mb": round(max(s["pss"] for s in samples) / 2**20, 1),
            "median_rss_mb": round(statistics.median(s["rss"] for s in samples) / 2**20, 1),
            "threads": max(s["threads"] for s in samples),
            "write_mb_per_s": round((wb1 - wb0) / elapsed / 2**20, 2),
            "median_stream_fps": round(fps, 1),
            "median_stream_kbps": round(kbps),
            "rings_mb": round(system["memory"].get("rings_bytes", 0) / 2**20, 1),
            # Where the CPU goes: the tokio reactor thread is the cost of the smol/tokio bridge.
            "cpu_percent_by_thread": {k: round(100 * (v - threads0.get(k, 0)) / elapsed, 2)
                                      for k, v in sorted(threads1.items()) if v - threads0.get(k, 0) > 0},
        }
    finally:
        nvr.send_signal(signal.SIGTERM)
        try:
            nvr.wait(30)
        except subprocess.TimeoutExpired:
            nvr.kill()
        cam.terminate()
        cam.wait(10)
        shutil.rmtree(os.path.join(data, "data"), ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clip", required=True)
    ap.add_argument("--streams", default="1 8 32 64")
    ap.add_argument("--seconds", type=int, default=60)
    a = ap.parse_args()
    workdir = os.path.join(ROOT, "bench", "tmp")
    os.makedirs(workdir, exist_ok=True)
    results = []
    for n in [int(x) for x in a.streams.split()]:
        r = run_one(n, a.seconds, a.clip, workdir)
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
    }
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
