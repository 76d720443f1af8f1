"""Detection in the running recorder (see scripts/bench-detect), three parts:

1. CPU: N streams of a 640x360 5 fps H.264 camera with detect = ["motion"]; the
   detect-* threads' CPU over a window once every stream decodes (per-thread
   utime+stime), as % of one core, with the whole process beside it.
2. Event latency: a replayed clip where a box enters an empty scene every 20 s;
   per motion event, the time from its start (the frame that started motion) to
   its `began` notice on /api/events/stream (the page's live push). Median.
3. False events: the still smpte75 pattern with the camera's running clock, one
   stream with the clock masked and one without, for M minutes: events each.
Writes bench/results/detect-live-<date>.md."""
import argparse
import datetime
import http.client
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import ROOT, cpu_by_thread, cpu_seconds, get_json, run_recorder, stop_process  # noqa: E402

CAMERA = os.path.join(ROOT, "scripts", "test-camera")


def camera(*args):
    from bench import free_port
    port = free_port()
    p = subprocess.Popen([CAMERA, "--port", str(port), *args], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    if "READY" not in p.stdout.readline():
        sys.exit(f"bench-detect: test camera {args} did not start")
    return p, port


def config(streams):
    head = ('[storage]\ndata_dir = "{work}/data"\nsegment_seconds = 60\n'
            '[web]\nlisten = "127.0.0.1:{port}"\n')
    return head + "".join(streams)


def stream(name, url, mask=None):
    s = f'[[streams]]\nname = "{name}"\nurl = "{url}"\nbitrate_kbps = 500\ndetect = ["motion"]\n'
    if mask:
        s += f"motion_mask = {json.dumps(mask)}\n"
    return s.replace("{", "{{").replace("}", "}}")


def wait_decoding(port, token, names, limit=120):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        v = get_json(port, "/api/streams", token)["streams"]
        ok = [s for s in v if s["name"] in names and (s.get("detection") or {}).get("frames_decoded", 0) > 0]
        if len(ok) == len(names):
            return time.monotonic() - t0
        time.sleep(0.5)
    sys.exit("bench-detect: not every stream decodes")


def cpu_part(n, seconds):
    cam, cport = camera("--pattern", "ball", "--fps", "5", "--gop", "10", "--size", "640x360")
    work = tempfile.mkdtemp(prefix="bench-detect-")
    url = f"rtsp://127.0.0.1:{cport}/h264"
    names = [f"cam{i}" for i in range(n)]
    proc, port, token = run_recorder(os.path.join(ROOT, "target", "release", "oxinvr"), work,
                                     config([stream(nm, url) for nm in names]))
    try:
        wait_decoding(port, token, names)
        time.sleep(5)
        before = get_json(port, "/api/streams", token)["streams"]
        t0, th0, p0 = time.monotonic(), cpu_by_thread(proc.pid), cpu_seconds(proc.pid)
        time.sleep(seconds)
        t1, th1, p1 = time.monotonic(), cpu_by_thread(proc.pid), cpu_seconds(proc.pid)
        after = get_json(port, "/api/streams", token)["streams"]
        wall = t1 - t0
        det = sum(v - th0.get(k, 0) for k, v in th1.items() if k.startswith("detect-"))
        dec = sum(a["detection"]["frames_decoded"] - b["detection"]["frames_decoded"] for a, b in zip(after, before))
        lost = sum(a["detection"]["frames_lost"] for a in after)
        return {"streams": n, "wall_s": round(wall, 1), "detect_cpu_pct": round(100 * det / wall, 1),
                "detect_cpu_pct_per_stream": round(100 * det / wall / n, 2),
                "process_cpu_pct": round(100 * (p1 - p0) / wall, 1),
                "decoded_per_stream_s": round(dec / wall / n, 2),
                "cpu_ms_per_decoded_frame": round(1000 * det / max(dec, 1), 2), "frames_lost": lost}
    finally:
        stop_process(proc)
        cam.terminate()


def make_clip(path):
    """A grey scene, empty for 8 s, then a box crossing it for 12 s; 5 fps, GOP 10."""
    box = "overlay=x='if(lt(mod(t,20),8),-200,(mod(t,20)-8)*50)':y=140"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=gray:s=640x360:r=5:d=120",
                    "-f", "lavfi", "-i", "color=c=white:s=80x80:r=5:d=120", "-filter_complex", f"[0][1]{box}",
                    "-c:v", "libx264", "-preset", "veryfast", "-g", "10", "-bf", "0", "-pix_fmt", "yuv420p", path],
                   check=True)


def sse_latencies(port, token, until, out):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/api/events/stream", headers={"Authorization": f"Bearer {token}"})
    r = conn.getresponse()
    event, data = None, None
    while time.time() < until:
        line = r.fp.readline()
        if not line:
            break
        line = line.decode().rstrip("\n")
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data = line[5:].strip()
        elif line == "" and data:
            e = json.loads(data)
            if event == "began" and e.get("kind") == "motion":
                out.append(time.time() * 1000 - e["start_ms"])
            event, data = None, None
    conn.close()


def latency_part(seconds):
    work = tempfile.mkdtemp(prefix="bench-detect-")
    clip = os.path.join(work, "box.mp4")
    make_clip(clip)
    cam, cport = camera("--replay", clip)
    proc, port, token = run_recorder(os.path.join(ROOT, "target", "release", "oxinvr"), work,
                                     config([stream("box", f"rtsp://127.0.0.1:{cport}/replay")]))
    lat = []
    try:
        wait_decoding(port, token, ["box"])
        t = threading.Thread(target=sse_latencies, args=(port, token, time.time() + seconds, lat), daemon=True)
        t.start()
        t.join(seconds + 35)
        return lat
    finally:
        stop_process(proc)
        cam.terminate()


def false_part(minutes):
    cam, cport = camera("--pattern", "smpte75", "--fps", "5", "--gop", "10")
    work = tempfile.mkdtemp(prefix="bench-detect-")
    url = f"rtsp://127.0.0.1:{cport}/h264"
    # The camera's clockoverlay sits at the top left: mask the top fifth.
    mask = [[[0, 0], [1, 0], [1, 0.2], [0, 0.2]]]
    proc, port, token = run_recorder(os.path.join(ROOT, "target", "release", "oxinvr"), work,
                                     config([stream("open", url), stream("masked", url, mask)]))
    try:
        wait_decoding(port, token, ["open", "masked"])
        time.sleep(minutes * 60)
        count = {}
        for name in ["open", "masked"]:
            count[name] = len(get_json(port, f"/api/events?stream={name}&limit=1000", token)["events"])
        return count
    finally:
        stop_process(proc)
        cam.terminate()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=16)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--latency-seconds", type=int, default=200)
    ap.add_argument("--static-minutes", type=float, default=10)
    a = ap.parse_args()
    started = datetime.datetime.now(datetime.timezone.utc)
    cpu = cpu_part(a.streams, a.seconds)
    lat = latency_part(a.latency_seconds)
    false = false_part(a.static_minutes)
    load = os.getloadavg()
    out = os.path.join(ROOT, "bench", "results", f"detect-live-{started:%Y-%m-%d}.md")
    rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    with open(out, "w") as f:
        f.write(f"# Detection in the running recorder, {started:%Y-%m-%d} (issue 12)\n\n")
        f.write(f"OxiNVR {rev} (release), {platform.machine()}, {os.cpu_count()} cores, load average at the end "
                f"{load[0]:.1f} (other builds share the machine). `scripts/bench-detect --streams {a.streams} "
                f"--seconds {a.seconds} --latency-seconds {a.latency_seconds} --static-minutes {a.static_minutes}`.\n\n")
        f.write("## CPU of motion detection\n\n")
        f.write(f"{a.streams} streams of one test camera (videotestsrc ball, 640x360, 5 fps, GOP 10, H.264), each "
                "with `detect = [\"motion\"]` and default `[detect]`, recording continuously; a "
                f"{a.seconds} s window starting 5 s after every stream decoded. CPU: utime+stime of the "
                "`detect-*` threads over the window.\n\n")
        f.write("| " + " | ".join(cpu) + " |\n|" + "---|" * len(cpu) + "\n| " + " | ".join(str(v) for v in cpu.values()) + " |\n\n")
        f.write("## Event latency\n\n")
        f.write("A box enters an empty grey scene every 20 s (ffmpeg lavfi clip, 5 fps, GOP 10, replayed by the "
                "test camera). Latency: receipt of the `began` notice on `/api/events/stream` (what the page "
                "listens to) less the event's `start_ms` (the frame that started motion; it includes the "
                "`start_frames` wait).\n\n")
        if lat:
            f.write(f"{len(lat)} events: median {statistics.median(lat):.0f} ms, min {min(lat):.0f}, max {max(lat):.0f}\n\n")
        else:
            f.write("no event was seen\n\n")
        f.write("## False events on a still picture\n\n")
        f.write(f"smpte75 with the camera's running clock overlay, {a.static_minutes} minutes, two streams of the "
                "same camera: `open` (no mask) and `masked` (top fifth masked, where the clock is).\n\n")
        per_hour = {k: round(v * 60 / a.static_minutes, 1) for k, v in false.items()}
        f.write(f"| stream | events | per hour |\n|---|---|---|\n")
        for k in false:
            f.write(f"| {k} | {false[k]} | {per_hour[k]} |\n")
    print(open(out).read())


if __name__ == "__main__":
    main()
