"""Integrations benchmark (scripts/bench-integrations): a real mosquitto broker on
loopback, N streams (default 64) of one shared test camera, the release binary with
[mqtt] on. Once every stream is up: MQTT messages and bytes per hour per stream at
steady state (mosquitto_sub on P/#, by topic kind), the latency from `POST
/api/events` answered to its `began` notice at the broker (a subscriber's receive
time; medians), the MQTT thread's heap (`memory.heap_by_subsystem.mqtt`), and
`GET /api/metrics` at N streams: time and size (medians). Writes
bench/results/integrations-<date>-<streams>.md."""

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import (BIN, ROOT, free_port, get_json, run_recorder, start_cameras,  # noqa: E402
                   stop_cameras, stop_process, stream_urls)

BOX = "benchbox"
P = f"oxinvr/{BOX}"


class Subscriber:
    """mosquitto_sub on P/# printing receive time, topic and payload length; one
    line per message, read by a thread into (t, topic, bytes, payload)."""

    def __init__(self, port):
        self.msgs, self.lock = [], threading.Lock()
        self.proc = subprocess.Popen(
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-t", f"{P}/#", "-F", "%U\t%t\t%l\t%p"],
            stdout=subprocess.PIPE, text=True, errors="replace")
        threading.Thread(target=self.read, daemon=True).start()

    def read(self):
        for line in self.proc.stdout:
            parts = line.rstrip("\n").split("\t", 3)
            if len(parts) < 3:
                continue  # a JPEG's payload has newlines: its tail lines are not messages
            try:
                t, topic, n = float(parts[0]), parts[1], int(parts[2])
            except ValueError:
                continue
            with self.lock:
                self.msgs.append((t, topic, n, parts[3] if len(parts) > 3 else ""))

    def since(self, t0):
        with self.lock:
            return [m for m in self.msgs if m[0] >= t0]

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def kind(topic):
    rest = topic[len(P) + 1:].split("/")
    if len(rest) == 1:
        return rest[0]  # availability, status, event
    return "/".join(rest[1:2]) if rest[1] != "objects" else "objects"


def began(payload, eid):
    try:
        e = json.loads(payload)
    except ValueError:
        return False
    return e.get("id") == eid and e.get("change") == "began"


def post_event(port, token, stream):
    body = json.dumps({"stream": stream, "label": "bench", "duration_s": 1}).encode()
    rq = urllib.request.Request(f"http://127.0.0.1:{port}/api/events", data=body, method="POST",
                                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(rq, timeout=10) as r:
        return json.load(r)["id"]


def scrape(port, token):
    rq = urllib.request.Request(f"http://127.0.0.1:{port}/api/metrics", headers={"Authorization": f"Bearer {token}"})
    t = time.perf_counter()
    with urllib.request.urlopen(rq, timeout=30) as r:
        body = r.read()
    return time.perf_counter() - t, len(body)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clip", required=True)
    ap.add_argument("--streams", type=int, default=64)
    ap.add_argument("--seconds", type=int, default=120)
    ap.add_argument("--events", type=int, default=30)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench-integrations-", dir=os.path.join(ROOT, "bench"))
    mport = free_port()
    with open(os.path.join(work, "mosquitto.conf"), "w") as f:
        f.write(f"listener {mport} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    broker = subprocess.Popen(["mosquitto", "-c", os.path.join(work, "mosquitto.conf")],
                              stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "mosquitto.log"), "w"))
    time.sleep(0.5)
    sub = Subscriber(mport)
    cams = start_cameras(a.clip, 1)
    try:
        streams = "".join(f'[[streams]]\nname = "cam{i}"\nurl = "{u}"\nbitrate_kbps = 1000\n'
                          for i, u in enumerate(stream_urls(cams, a.streams)))
        config = ('[storage]\ndata_dir = "{work}/data"\n[web]\nlisten = "127.0.0.1:{port}"\n'
                  f'[mqtt]\nurl = "mqtt://127.0.0.1:{mport}"\nname = "{BOX}"\n' + streams)
        proc, port, token = run_recorder(BIN, work, config)
        deadline = time.time() + 120
        while time.time() < deadline:
            st = get_json(port, "/api/streams", token)
            up = sum(1 for s in st["streams"] if s["status"]["state"] == "streaming")
            if up == a.streams:
                break
            time.sleep(1)
        else:
            sys.exit(f"bench: only {up} of {a.streams} streams up after 120 s")
        time.sleep(15)  # the first status burst after connecting settles
        # Steady state: no events, only the recorder's own state.
        t0 = time.time()
        time.sleep(a.seconds)
        t1 = time.time()
        steady = [m for m in sub.since(t0) if m[0] < t1]
        # Event latency: POST answered -> `began` notice at the broker.
        lat, lat_sent = [], []
        for i in range(a.events):
            stream = f"cam{i % a.streams}"
            t = time.time()
            eid = post_event(port, token, stream)
            t_ans = time.time()
            end = t + 5
            while time.time() < end:
                hit = [m for m in sub.since(t) if m[1] == f"{P}/{stream}/event" and began(m[3], eid)]
                if hit:
                    lat.append((hit[0][0] - t_ans) * 1000)
                    lat_sent.append((hit[0][0] - t) * 1000)
                    break
                time.sleep(0.002)
            time.sleep(1.5)
        system = get_json(port, "/api/system", token)
        mqtt_heap = system["memory"]["heap_by_subsystem"].get("mqtt")
        scrapes = [scrape(port, token) for _ in range(21)]
        stop_process(proc)
    finally:
        stop_cameras(cams)
        sub.stop()
        broker.terminate()
    hours = (t1 - t0) / 3600
    by_kind = {}
    for _, topic, n, _ in steady:
        k = kind(topic)
        c = by_kind.setdefault(k, [0, 0])
        c[0] += 1
        c[1] += n
    msgs, size = len(steady), sum(m[2] for m in steady)
    r = {
        "streams": a.streams, "steady_seconds": round(t1 - t0, 1),
        "messages_per_hour_per_stream": round(msgs / hours / a.streams, 1),
        "bytes_per_hour_per_stream": round(size / hours / a.streams),
        "event_latency_ms_median": round(statistics.median(lat), 2) if lat else None,
        "event_latency_ms_max": round(max(lat), 2) if lat else None, "event_samples": len(lat),
        "event_latency_from_post_sent_ms_median": round(statistics.median(lat_sent), 2) if lat_sent else None,
        "mqtt_heap_bytes": mqtt_heap,
        "metrics_scrape_ms_median": round(statistics.median(s[0] for s in scrapes) * 1000, 2),
        "metrics_bytes": statistics.median(s[1] for s in scrapes),
    }
    print(r, by_kind, flush=True)
    date = datetime.date.today().isoformat()
    out = os.path.join(ROOT, "bench", "results", f"integrations-{date}-{a.streams}.md")
    version = subprocess.run([BIN, "--version"], capture_output=True, text=True).stdout.strip()
    with open(out, "w") as f:
        f.write(f"# MQTT and Prometheus metrics at {a.streams} streams, {date}\n\n")
        f.write(f"`scripts/bench-integrations --streams {a.streams} --seconds {a.seconds}`; {version}; "
                f"{platform.machine()}, {os.cpu_count()} cores (shared with other work); mosquitto "
                "(Debian's) on loopback; one shared test camera (640x360 ~1 Mbit/s); measured only "
                "once every stream was streaming.\n\n| figure | value |\n|---|---|\n")
        for k, v in r.items():
            f.write(f"| {k} | {v} |\n")
        f.write("\nSteady state (no events) by topic kind, over the window:\n\n"
                "| topic | messages | bytes | messages/hour/stream |\n|---|---|---|---|\n")
        for k, (n, b) in sorted(by_kind.items()):
            f.write(f"| {k} | {n} | {b} | {round(n / hours / a.streams, 1)} |\n")
        f.write("\nevent latency = a subscriber's receive time of the `began` notice on `P/<stream>/event` "
                "minus the time `POST /api/events` answered (same host clock; the notice is published while "
                "the answer is sent, so this is the broker's share); from_post_sent counts from the request's "
                "start (HTTP, the database insert and the broker together). metrics = `GET /api/metrics` "
                "with an API key, 21 scrapes.\n")
    shutil.rmtree(work, ignore_errors=True)
    print(f"written {out}")


if __name__ == "__main__":
    main()
