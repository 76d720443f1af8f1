"""Power cuts on the emulated board (issue 10 part 4); run through scripts/power-cuts.

One QEMU malta box (target/image, a 1 GiB copy of its disk) records 3 host test
cameras (scripts/test-camera, real RTSP). N times, at a random moment while it
records, the board is hard-reset: alternately the monitor's `system_reset` (the
reset button: the guest's page cache is lost, QEMU stays) and `kill -9` of QEMU
(power pulled) followed by a new QEMU on the same disk. Some cuts are aimed at
retention deletion (a few seconds of recording per stream, segments of 20 s, so
it deletes every rotation), one at the schema migration of a database made old
on the host. After each cut:

  - the box comes back recording all 3 cameras (cut to first frame: boot-to-recording);
  - the loss: what a stream had written before the cut (the API's `writing` end,
    polled just before) minus what is recorded after it, <= sync_seconds + slack;
  - every recording listed by the API is fetched and decoded to its end by the
    host's ffmpeg (-xerror), its frame count (ffprobe) against the database's;
  - `oxinvr check` on the box (busybox console: the recorder stopped for it)
    says the database and the files agree;
  - the console: the selector did not have to reset damaged boot counters
    (boot.env), and what e2fsck had to repair on the data partition.

At the end QEMU is stopped and the data partition is checked on the host
(e2fsck -fn of a copy, then every file under recordings/ decoded, frames
against the database). Figures go to --report (markdown), rewritten after
every cut so that an interrupted run still leaves them.

stdlib only; /usr/bin/python3 (the test camera needs Debian's python3-gi).
"""
import argparse
import json
import os
import random
import re
import signal
import socket
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import free_port  # noqa: E402

# The box's certificate is self-signed, made at its first boot (what it defends is
# tested by tests/tls.rs and test-appliance's fingerprint check, not here).
SELF_SIGNED = ssl.create_default_context()
SELF_SIGNED.check_hostname = False
SELF_SIGNED.verify_mode = ssl.CERT_NONE
from qemu_serial import Console  # noqa: E402

W = "target/power-cuts"
SYNC_SECONDS = 10  # the image's [storage] sync_seconds (overlay/etc/oxinvr/oxinvr.toml)
SEGMENT_SECONDS = 20  # set on the box: segments close often, retention deletes often
MAX_STORAGE_MB = 3  # per stream: 2-3 segments; with CAM_KBIT retention deletes the oldest at about every rotation, never the one just closed
CAM_KBIT = 500  # a 20 s segment is about 1.2 MB
LOSS_SLACK_S = 3.0  # one fragment (1 s GOP) + the poll before the cut + clock reading
CONF = "/var/lib/oxinvr/oxinvr.toml"
CAMS = ("cam1", "cam2", "cam3")


class Fail(Exception):
    pass


def log(msg):
    print(msg, flush=True)


def now():
    return time.time()


# ------------------------------------------------------------------ the box --
class Box:
    def __init__(self, args):
        self.args = args
        self.disk = f"{W}/sdcard.img"
        self.sock = f"{W}/serial.sock"
        self.mon = f"{W}/monitor.sock"
        self.pidfile = f"{W}/qemu.pid"
        self.port = free_port()  # plain HTTP: /api/health only (the box redirects the rest)
        self.https_port = free_port()
        self.pid = None
        self.log = None
        self.starts = 0
        self.key = None

    # --- QEMU ---
    def start(self, fresh=False):
        """Starts QEMU (returns once the process runs; health is waited for separately)."""
        self.starts += 1
        self.log = f"{W}/serial-{self.starts}.log"
        cmd = ["scripts/qemu-boot", "--disk", self.disk, "--detach", "--serial-socket", self.sock,
               "--serial-log", self.log, "--monitor-socket", self.mon, "--pidfile", self.pidfile,
               "--http-port", str(self.port), "--https-port", str(self.https_port), "--append", "oxinvr.console=sh oxinvr.health_timeout=600"]
        if fresh:
            cmd += ["--fresh", "--disk-size", "1G"]
        for p in (self.pidfile,):
            if os.path.exists(p):
                os.unlink(p)
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise Fail(f"qemu-boot failed: {r.stdout}{r.stderr}")
        self.pid = int(open(self.pidfile).read().strip())
        self.log_mark = 0

    def alive(self):
        if self.pid is None:
            return False
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                return f.read().split(") ")[1][0] not in "ZX"
        except (OSError, IndexError):
            return False

    def kill9(self):
        os.kill(self.pid, signal.SIGKILL)
        for _ in range(100):
            if not self.alive():
                break
            time.sleep(0.05)
        try:
            os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pass
        self.pid = None

    def stop(self):
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)
            for _ in range(100):
                if not self.alive():
                    break
                time.sleep(0.1)
            if self.alive():
                os.kill(self.pid, signal.SIGKILL)
        self.pid = None

    def monitor(self, cmd):
        s = socket.socket(socket.AF_UNIX)
        s.connect(self.mon)
        s.settimeout(5)
        s.sendall(cmd.encode() + b"\n")
        out, end = b"", now() + 5
        while now() < end and out.count(b"(qemu) ") < 2:
            try:
                d = s.recv(65536)
            except socket.timeout:
                break
            if not d:
                break
            out += d
        s.close()
        return out.decode(errors="replace")

    def reset(self):
        self.log_mark = os.path.getsize(self.log)
        self.monitor("system_reset")

    def console_since(self):
        try:
            with open(self.log, "rb") as f:
                f.seek(self.log_mark)
                return f.read().decode(errors="replace").replace("\r", "")
        except OSError:
            return ""

    def sh(self, cmd, timeout=120):
        """Runs CMD in the busybox shell on the serial console: (output, rc)."""
        con = Console(self.sock, timeout)
        try:
            # busybox's prompt may end with a cursor position query (ESC [6n).
            con.expect(r"[#$] (\x1b\[6n)?$", poke="\n")
            return con.run(cmd)
        finally:
            con.s.close()

    # --- HTTP API ---
    def url(self, path):
        """Health over plain HTTP (the box's boot check uses it too); the rest over
        HTTPS, the appliance's default, on the box's self-signed certificate."""
        if path == "/api/health":
            return f"http://127.0.0.1:{self.port}{path}"
        return f"https://127.0.0.1:{self.https_port}{path}"

    def api(self, path, body=None, timeout=30, raw=False):
        req = urllib.request.Request(self.url(path))
        if body is not None:
            req.data = json.dumps(body).encode()
            req.add_header("Content-Type", "application/json")
        if self.key:
            req.add_header("Authorization", f"Bearer {self.key}")
        with urllib.request.urlopen(req, timeout=timeout, context=SELF_SIGNED) as r:
            data = r.read()
        return data if raw else json.loads(data)

    def wait_health(self, timeout):
        end = now() + timeout
        while now() < end:
            if not self.alive():
                raise Fail("QEMU exited while waiting for /api/health")
            try:
                if self.api("/api/health", timeout=5).get("ok"):
                    return now()
            except (OSError, ValueError, urllib.error.URLError):
                pass
            time.sleep(0.5)
        raise Fail(f"/api/health did not answer within {timeout} s")

    def frames(self):
        """{stream: frames since the recorder started} (0 when not recording)."""
        out = {}
        for s in self.api("/api/streams", timeout=10)["streams"]:
            out[s.get("name") or s["spec"]["name"]] = (s.get("status") or {}).get("frames") or 0
        return out

    def wait_recording(self, timeout, since_restart=True):
        """Waits until every camera has frames; returns that moment."""
        end = now() + timeout
        last = None
        while now() < end:
            try:
                f = self.frames()
                last = f
                if all(f.get(c, 0) > 0 for c in CAMS):
                    return now()
            except (OSError, ValueError, KeyError, urllib.error.URLError) as e:
                last = e
            time.sleep(0.3)
        raise Fail(f"not all cameras recording within {timeout} s: {last}")

    def recordings(self):
        return self.api("/api/recordings?start=1&end=4102444800000", timeout=30)["recordings"]


# ---------------------------------------------------------------- media check --
def decode(path):
    """(frames, error or None): ffprobe's count of video frames and ffmpeg -xerror's verdict."""
    r = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-xerror", "-i", path, "-f", "null", "-"],
                       capture_output=True, text=True)
    err = r.stderr.strip() or (f"ffmpeg exit status {r.returncode}" if r.returncode else None)
    p = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
                        "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", path],
                       capture_output=True, text=True)
    try:
        frames = int(p.stdout.strip().split(",")[0])
    except ValueError:
        frames = -1
        err = err or f"ffprobe: {p.stderr.strip()}"
    return frames, err


# -------------------------------------------------------------------- the run --
class Run:
    def __init__(self, args):
        self.args = args
        self.box = Box(args)
        self.cams = []
        self.cuts = []  # one dict per cut
        self.checked = {}  # recording id -> (bytes, closed) last verified
        self.files_checked = 0
        self.unplayable = []
        self.host_check = None
        self.seen = {}  # path -> recording as last listed
        self.run_start = {}  # stream -> start_ms of its first recording in this recorder run
        self.rng = random.Random(args.seed)
        self.t0 = now()

    # --- set-up ---
    def start_cameras(self):
        for i, name in enumerate(CAMS):
            port = free_port()
            out = open(f"{W}/{name}.log", "w")
            p = subprocess.Popen(["/usr/bin/python3", "scripts/test-camera", "--port", str(port),
                                  "--address", "127.0.0.1", "--size", "320x240", "--fps", "10",
                                  "--bitrate", str(CAM_KBIT),
                                  "--pattern", ["ball", "smpte", "snow"][i]],
                                 stdout=out, stderr=subprocess.STDOUT)
            self.cams.append((name, port, p))
        end = now() + 30
        for name, port, p in self.cams:
            while "READY" not in open(f"{W}/{name}.log").read():
                if p.poll() is not None or now() > end:
                    raise Fail(f"test camera {name} did not start: {open(f'{W}/{name}.log').read()}")
                time.sleep(0.2)
        log(f"   3 test cameras (H.264 320x240 10 fps {CAM_KBIT} kbit/s): ports {', '.join(str(c[1]) for c in self.cams)}")

    def set_up_box(self):
        b = self.box
        t = now()
        b.start(fresh=True)
        b.wait_health(400)
        log(f"   fresh box healthy {now() - t:.1f} s after QEMU start (first boot grows and formats the data partition)")
        # Short segments: many files, retention at every rotation.
        out, rc = b.sh(f"sed -i 's/^segment_seconds = .*/segment_seconds = {SEGMENT_SECONDS}/' {CONF} && "
                       f"grep -E '^(segment|sync)_seconds' {CONF} && /etc/init.d/S50oxinvr restart")
        if rc:
            raise Fail(f"cannot set segment_seconds: {out}")
        log("   box: " + " ".join(out.split()))
        b.wait_health(120)
        st = b.api("/api/auth/setup", {"username": "admin", "password": "power-cuts-pw-1"}, timeout=120)
        if st.get("user", {}).get("role") != "admin":
            raise Fail(f"first-run setup: {st}")
        b.key = self.make_key()
        for name, port, _ in self.cams:
            b.api("/api/streams", {"name": name, "url": f"rtsp://10.0.2.2:{port}/h264",
                                   "max_storage_mb": MAX_STORAGE_MB})
        t = now()
        b.wait_recording(120)
        self.mark_run_start()
        log(f"   3 streams added (max_storage_mb={MAX_STORAGE_MB}), recording after {now() - t:.1f} s")

    def make_key(self):
        import http.cookiejar
        jar = http.cookiejar.CookieJar()
        op = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar),
                                         urllib.request.HTTPSHandler(context=SELF_SIGNED))
        base = f"https://127.0.0.1:{self.box.https_port}"

        def post(path, body, hdr=None):
            req = urllib.request.Request(base + path, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json", **(hdr or {})})
            with op.open(req, timeout=120) as r:
                return json.loads(r.read())
        csrf = post("/api/auth/login", {"username": "admin", "password": "power-cuts-pw-1"})["csrf"]
        key = post("/api/keys", {"name": "power-cuts"}, {"X-CSRF-Token": csrf})["key"]
        if not key.startswith("oxk_"):
            raise Fail(f"no API key: {key}")
        return key

    # --- one cut ---
    def recordings(self):
        """The box's recordings; each one is remembered by path (self.seen)."""
        recs = self.box.recordings()
        for r in recs:
            self.seen[r["path"]] = r
        return recs

    def writing_ends(self):
        """{stream: how far it is written (guest ms)} from the API, and the host time of the answer."""
        recs = self.recordings()
        t = now()
        ends = {}
        for r in recs:
            e = (r.get("writing") or {}).get("end_ms") or r["end_ms"]
            ends[r["stream"]] = max(ends.get(r["stream"], 0), e)
        return ends, t, recs

    def cut(self, i, kind, aim):
        b = self.box
        c = {"n": i, "kind": kind, "aim": aim}
        # Wait for the moment.
        if aim == "retention":
            # A rotation: retention runs about 1 s later and deletes the oldest
            # segments (rows to garbage, then unlinks). Cut into that.
            ids0 = {r["id"] for r in self.recordings()}
            end = now() + 3 * SEGMENT_SECONDS + 30
            while now() < end:
                ends, t_poll, recs = self.writing_ends()
                ids = {r["id"] for r in recs}
                if ids - ids0 and ids0 - ids:
                    break
                if ids - ids0:  # rotated, nothing deleted yet: retention is due
                    break
                time.sleep(0.3)
            time.sleep(self.rng.uniform(0.7, 1.6))
        else:
            time.sleep(self.rng.uniform(*self.args.delay))
        ends, t_poll, recs = self.writing_ends()
        t_cut = now()
        c["since_poll_s"] = round(t_cut - t_poll, 2)
        if kind == "reset":
            b.reset()
        else:
            b.kill9()
        c["t_cut"] = t_cut
        log(f"   cut {i}: {kind} ({aim}) at {time.strftime('%H:%M:%S', time.gmtime(t_cut))}")
        if kind == "kill":
            b.start()
        self.after_cut(c, ends, t_cut, t_poll, recs)
        return c

    def after_cut(self, c, ends, t_cut, t_poll, before, t_loss=None):
        """The checks after a cut at t_cut. The loss counts from t_loss (default
        t_cut): what the streams had written at t_poll, plus t_loss - t_poll."""
        b = self.box
        t_loss = t_cut if t_loss is None else t_loss
        t_h = b.wait_health(400)
        t_r = b.wait_recording(180)
        c["boot_to_health_s"] = round(t_h - t_cut, 1)
        c["boot_to_recording_s"] = round(t_r - t_cut, 1)
        con = b.console_since()
        c["boot_env_reset"] = "counters were reset" in con or "no /boot/boot.env" in con
        c["fsck"] = re.findall(r"oxinvr: data: (e2fsck[^\n]*)", con)
        if c["boot_env_reset"]:
            raise Fail(f"cut {c['n']}: the selector found boot.env damaged (counters were reset)")
        # Loss: written before the cut (guest clock), recorded after it.
        recs = self.recordings()
        loss = {}
        for s, e in ends.items():
            # Recorded before the cut: up to the end of what survived, or if nothing
            # of this recorder run survived, from the run's first frame.
            after = max((r["end_ms"] for r in recs if r["stream"] == s and r["start_ms"] <= e), default=0)
            after = max(after, self.run_start.get(s, 0))
            after = max(after, self.retention_deleted(s, before, recs))
            loss[s] = round((e - after) / 1000 + (t_loss - t_poll), 2)
        c["loss_s"] = max(loss.values()) if loss else None
        c["loss_by_stream"] = loss
        deleted = sorted({r["id"] for r in before if r["closed"]} - {r["id"] for r in recs})
        c["deleted_across_cut"] = len(deleted)
        bound = SYNC_SECONDS + LOSS_SLACK_S
        log(f"     back recording {c['boot_to_recording_s']} s after the cut (healthy {c['boot_to_health_s']} s); "
            f"loss {c['loss_s']} s (bound {bound}); fsck: {c['fsck'] or 'clean'}")
        if c["loss_s"] is not None and c["loss_s"] > bound:
            raise Fail(f"cut {c['n']}: lost {c['loss_s']} s of recording, more than sync_seconds + {LOSS_SLACK_S}: {loss}")
        self.mark_run_start(recs)
        self.check_files(c, recs)
        if c["n"] % self.args.check_every == 0 or c["n"] == self.args.cuts:
            self.oxinvr_check(c)

    def retention_deleted(self, stream, before, recs):
        """The end of the newest recording of `stream` that retention deleted: one
        seen at some poll (by path: a row whose insert a cut lost comes back adopted
        under a new id) that is gone now and older than the one being written at the
        last poll. Rows are only deleted durably (garbage transaction, synchronous=
        FULL), so a cut cannot make an older recording vanish; retention can."""
        mine = [r for r in before if r["stream"] == stream]
        if not mine:
            return 0
        newest = max(mine, key=lambda r: r["start_ms"])
        now_paths = {r["path"] for r in recs}
        return max((r["end_ms"] for r in self.seen.values() if r["stream"] == stream
                    and r["path"] not in now_paths and r["start_ms"] < newest["start_ms"]), default=0)

    def mark_run_start(self, recs=None):
        """Remembers where each stream's recording began in this recorder run (the
        start of its open recording, just after wait_recording)."""
        for r in recs if recs is not None else self.box.recordings():
            if not r["closed"]:
                self.run_start[r["stream"]] = r["start_ms"]

    def check_files(self, c, recs):
        """Fetches every recording that changed since it was last checked and decodes it."""
        n = 0
        for r in recs:
            sig = (r["bytes"], r["closed"])
            if self.checked.get(r["id"]) == sig and r["closed"]:
                continue
            if not r["closed"] and r["frames"] == 0:
                continue  # open, nothing synced yet: the file claims no frame (invariant 1)
            f = f"{W}/rec.mp4"
            try:
                data = self.box.api(f"/api/recordings/{r['id']}/file", timeout=120, raw=True)
            except urllib.error.HTTPError as e:
                if e.code == 404:  # deleted by retention meanwhile
                    continue
                raise
            open(f, "wb").write(data)
            frames, err = decode(f)
            n += 1
            self.files_checked += 1
            bad = err or frames < r["frames"] or (r["closed"] and frames != r["frames"])
            if bad:
                self.unplayable.append({"cut": c["n"], "id": r["id"], "path": r["path"], "err": err,
                                        "frames_file": frames, "frames_db": r["frames"], "closed": r["closed"]})
                os.replace(f, f"{W}/bad-{r['id']}.mp4")
                raise Fail(f"cut {c['n']}: recording {r['id']} ({r['path']}, {'closed' if r['closed'] else 'open'}): "
                           f"{err or ''} file {frames} frames, database {r['frames']}")
            self.checked[r["id"]] = sig
        c["files_checked"] = n
        c["recordings"] = len(recs)
        log(f"     {n} recording(s) fetched and decoded to the end, frames as in the database ({len(recs)} listed)")

    def oxinvr_check(self, c):
        b = self.box
        out, rc = b.sh(f"/etc/init.d/S50oxinvr stop; /usr/bin/oxinvr check --config {CONF} 2>&1 | tail -n 3; "
                       f"/etc/init.d/S50oxinvr start", timeout=180)
        m = re.search(r"ok: database and files agree \((\d+) segments\)", out)
        c["oxinvr_check"] = m.group(0) if m else out.strip().splitlines()[-1:]
        if not m:
            raise Fail(f"cut {c['n']}: oxinvr check on the box: {out}")
        log(f"     oxinvr check on the box: {m.group(0)}")
        b.wait_health(120)
        b.wait_recording(120)
        self.mark_run_start()

    # --- the migration cut ---
    def migration_cut(self, i, after_commit=False):
        """Stops the box, takes the database back to schema 5 on the host, boots
        the (new) binary on it and kills QEMU while it starts and migrates; or,
        `after_commit`, just after the migration committed (the API answers only
        once the database is open and migrated), so the next boot starts on a
        database migrated an instant before the power went."""
        b = self.box
        c = {"n": i, "kind": "kill", "aim": "migration", "after_commit": after_commit}
        ends, t_poll, recs = self.writing_ends()
        t_kill1 = now()
        b.kill9()
        with DataPartition(b.disk) as d:
            v = d.downgrade_db()
        log(f"   cut {i}: database taken back from schema {v} to 5 on the host; booting the new binary on it")
        b.start()
        # oxinvr starts with rcS's last scripts: "system started" follows at once.
        end = now() + 300
        while "system started" not in b.console_since():
            if now() > end or not b.alive():
                raise Fail("the box did not start after the downgrade")
            time.sleep(0.05)
        t_started = now()
        if after_commit:
            t_health = b.wait_health(300)
            time.sleep(self.rng.uniform(0.0, 1.0))
            c["cut_after_health_s"] = round(now() - t_health, 2)
        else:
            time.sleep(self.rng.uniform(0.0, 3.0))
        t_cut = now()
        c["cut_after_start_s"] = round(t_cut - t_started, 2)
        b.kill9()
        with DataPartition(b.disk, readonly_copy=True) as d:
            c["schema_at_cut"] = d.schema_version()
        log(f"   cut {i}: kill during start-up; schema on the disk after the cut: {c['schema_at_cut']}")
        c["t_cut"] = t_cut
        b.start()
        # The loss is that of the first kill (while recording); the box was down
        # from then to the second.
        self.after_cut(c, ends, t_cut, t_poll, recs, t_loss=t_kill1)
        return c

    # --- the end ---
    def final_host_check(self):
        b = self.box
        out, rc = b.sh("/etc/init.d/S50oxinvr stop; sync; echo stopped", timeout=120)
        b.stop()
        with DataPartition(b.disk) as d:
            self.host_check = d.check_all()
        hc = self.host_check
        log(f"   host: e2fsck -fn {hc['e2fsck']}; {hc['files']} files decoded, {len(hc['bad'])} unplayable, "
            f"{hc['rows']} database rows, {hc['missing']} rows without a file, {hc['orphans']} files without a row")
        if hc["bad"] or hc["missing"] or hc["orphans"] or hc["e2fsck_rc"] != 0:
            raise Fail(f"host check of the data partition: {hc}")

    def run(self):
        os.makedirs(W, exist_ok=True)
        log(f"== power cuts: {self.args.cuts} cuts, seed {self.args.seed} ==")
        self.start_cameras()
        self.set_up_box()
        n = self.args.cuts
        mig = {self.args.migration_at} if self.args.migration_at else (
            set(range(5, n + 1, 10)) if n >= 10 else {max(2, n // 2)})
        for i in range(1, self.args.cuts + 1):
            if self.args.until and time.strftime("%H:%M", time.gmtime()) >= self.args.until:
                log(f"   --until {self.args.until} (UTC) reached after {i - 1} cuts: checking and stopping")
                break
            if i in mig and self.args.migration:
                # Every other migration cut lands after the commit instead of during it.
                seen = sum(1 for c in self.cuts if c["aim"] == "migration")
                c = self.migration_cut(i, after_commit=self.args.migration_after_commit or seen % 2 == 1)
            else:
                kind = "reset" if i % 2 else "kill"
                aim = "retention" if i % 3 == 0 else "recording"
                c = self.cut(i, kind, aim)
            self.cuts.append(c)
            self.write_report()
        self.final_host_check()
        self.write_report(done=True)
        log(f"== power cuts: {len(self.cuts)} cuts survived ==")

    def stop(self):
        self.box.stop()
        for _, _, p in self.cams:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()

    # --- figures ---
    def write_report(self, done=False, failure=None):
        if not self.args.report:
            return
        cuts = self.cuts
        losses = [c["loss_s"] for c in cuts if c.get("loss_s") is not None]
        b2r = [c["boot_to_recording_s"] for c in cuts if "boot_to_recording_s" in c]
        kinds = {}
        for c in cuts:
            k = f"{c['kind']} ({c['aim']})"
            kinds[k] = kinds.get(k, 0) + 1
        fsck = [f for c in cuts for f in c.get("fsck", [])]
        lines = [
            f"# Power cuts on the emulated board, {time.strftime('%Y-%m-%d', time.gmtime(self.t0))}",
            "",
            f"`scripts/power-cuts {self.args.cuts}` (seed {self.args.seed}): QEMU malta (TCG) from "
            f"`scripts/build-image`, 1 GiB disk, 3 host test cameras (H.264 320x240 10 fps {CAM_KBIT} kbit/s, real RTSP), "
            f"segment_seconds={SEGMENT_SECONDS}, sync_seconds={SYNC_SECONDS}, max_storage_mb={MAX_STORAGE_MB} per stream. "
            "Machine: 2 cores shared with other builds.",
            "",
            f"Status: {'complete' if done else ('FAILED: ' + failure if failure else 'in progress (rewritten after each cut)')}; "
            f"run time {(now() - self.t0) / 60:.0f} min.",
            "",
            "| figure | value |",
            "|---|---|",
            f"| cuts survived | {len(cuts)} of {self.args.cuts} planned |",
            f"| by kind | {', '.join(f'{k}: {v}' for k, v in sorted(kinds.items()))} |",
            f"| loss per cut, worst / median | {max(losses):.1f} s / {statistics.median(losses):.1f} s (bound sync_seconds {SYNC_SECONDS} + {LOSS_SLACK_S} s) |" if losses else "| loss per cut | - |",
            f"| cut to recording again (3 cameras), median / worst | {statistics.median(b2r):.1f} s / {max(b2r):.1f} s |" if b2r else "| cut to recording | - |",
            f"| recordings fetched and decoded after cuts | {self.files_checked}, unplayable {len(self.unplayable)} |",
            f"| recordings deleted by retention across a cut (listed before, gone after) | {sum(c.get('deleted_across_cut', 0) for c in cuts)} |",
            f"| boot.env damaged (selector reset the counters) | {sum(1 for c in cuts if c.get('boot_env_reset'))} |",
            f"| data partition fsck at boot | {len(fsck)} repairs: {', '.join(sorted(set(fsck))) or 'none'} |",
            f"| `oxinvr check` on the box | {sum(1 for c in cuts if 'oxinvr_check' in c)} runs, all `ok` |",
        ]
        mig = [c for c in cuts if c["aim"] == "migration"]
        for c in mig:
            when = (f"{c.get('cut_after_health_s')} s after the API answered (migration committed), "
                    if c.get("after_commit") else "")
            lines.append(f"| migration cut (cut {c['n']}) | database taken back to schema 5 on the host, QEMU killed "
                         f"{when}{c.get('cut_after_start_s')} s after `system started`: schema on the disk at the cut "
                         f"{c.get('schema_at_cut')}; box back recording, migrated "
                         f"(schema at the end: {(self.host_check or {}).get('schema', '-')}) |")
        if self.host_check:
            hc = self.host_check
            lines.append(f"| host check at the end | e2fsck -fn {hc['e2fsck']}; {hc['files']} files decoded, "
                         f"{len(hc['bad'])} unplayable; {hc['rows']} rows, {hc['missing']} without file, "
                         f"{hc['orphans']} files without row |")
        lines += ["", "Per cut:", "", "| # | kind | aim | loss s | cut to recording s | fsck | files checked |", "|---|---|---|---|---|---|---|"]
        for c in cuts:
            lines.append(f"| {c['n']} | {c['kind']} | {c['aim']} | {c.get('loss_s', '-')} | {c.get('boot_to_recording_s')} | "
                         f"{'; '.join(c.get('fsck', [])) or '-'} | {c.get('files_checked')} |")
        os.makedirs(os.path.dirname(self.args.report) or ".", exist_ok=True)
        with open(self.args.report + ".tmp", "w") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(self.args.report + ".tmp", self.args.report)
        with open(f"{W}/cuts.json", "w") as f:
            json.dump({"cuts": cuts, "unplayable": self.unplayable, "host": self.host_check}, f, indent=1)


# ----------------------------------------------------- the data partition on the host --
def migrations():
    """The index's migrations as the binary has them (src/index/db.rs MIGRATIONS)."""
    src = open("src/index/db.rs").read()
    block = src[src.index("pub const MIGRATIONS"):]
    return re.findall(r'r#"(.*?)"#', block[:block.index("\n];")], re.S)


def schema_of(con):
    """({table: [columns]}, [indexes]) of a database, SQLite's own objects left out."""
    names = con.execute("SELECT type, name FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%'").fetchall()
    tables = {n: [r[1] for r in con.execute(f'PRAGMA table_info("{n}")')] for t, n in names if t == "table"}
    return tables, [n for t, n in names if t == "index"]


def schema_5():
    """The schema version 5 made, from the first five migrations in memory."""
    con = sqlite3.connect(":memory:")
    for m in migrations()[:5]:
        con.executescript(f"BEGIN; {m} COMMIT;")
    return schema_of(con)



class DataPartition:
    """Partition 4 of the (stopped) QEMU disk on a loop device, mounted; with
    readonly_copy a copy of it is used (its journal replayed there, not on the disk)."""

    def __init__(self, disk, readonly_copy=False):
        self.disk, self.copy = disk, readonly_copy

    def __enter__(self):
        j = json.loads(subprocess.run(["sfdisk", "-J", self.disk], capture_output=True, text=True, check=True).stdout)
        p = [p for p in j["partitiontable"]["partitions"] if p["node"].endswith("4")][0]
        self.tmp = tempfile.mkdtemp(prefix="oxinvr-power-")
        self.mnt = f"{self.tmp}/mnt"
        os.mkdir(self.mnt)
        off, size = p["start"] * 512, p["size"] * 512
        if self.copy:
            img = f"{self.tmp}/data.img"
            subprocess.run(["dd", f"if={self.disk}", f"of={img}", "bs=1M", f"skip={off}", f"count={size}",
                            "iflag=skip_bytes,count_bytes", "conv=sparse", "status=none"], check=True)
            self.loop = subprocess.run(["losetup", "-f", "--show", img], capture_output=True, text=True,
                                       check=True).stdout.strip()
        else:
            self.loop = subprocess.run(["losetup", "-f", "--show", "-o", str(off), "--sizelimit", str(size), self.disk],
                                       capture_output=True, text=True, check=True).stdout.strip()
        self.mounted = False
        return self

    def mount(self, ro=False):
        subprocess.run(["mount", "-t", "ext4", "-o", "ro" if ro else "rw", self.loop, self.mnt], check=True)
        self.mounted = True

    def __exit__(self, *exc):
        if self.mounted:
            subprocess.run(["umount", self.mnt], check=False)
        subprocess.run(["losetup", "-d", self.loop], check=False)
        subprocess.run(["rm", "-rf", self.tmp], check=False)

    def db(self):
        return sqlite3.connect(f"{self.mnt}/oxinvr.db", timeout=5)

    def downgrade_db(self):
        """Takes the index back to schema version 5: every table, index and column
        a later migration added is dropped (see schema_5), the rows of schema 5's
        columns kept, so the binary runs migrations 6 and on again."""
        self.mount()
        con = self.db()
        v = con.execute("PRAGMA user_version").fetchone()[0]
        tables, indexes = schema_of(con)
        ref_tables, ref_indexes = schema_5()
        sql = ["BEGIN;"]
        sql += [f'DROP INDEX "{i}";' for i in sorted(set(indexes) - set(ref_indexes))]
        sql += [f'DROP TABLE "{t}";' for t in sorted(set(tables) - set(ref_tables))]
        for t, cols in sorted(ref_tables.items()):
            sql += [f'ALTER TABLE "{t}" DROP COLUMN "{c}";' for c in tables.get(t, []) if c not in cols]
        sql += ["PRAGMA user_version = 5;", "COMMIT;"]
        con.executescript("\n".join(sql))
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.close()
        subprocess.run(["sync"], check=True)
        return v

    def schema_version(self):
        self.mount()  # rw on the copy: the journal is replayed there
        con = self.db()
        v = con.execute("PRAGMA user_version").fetchone()[0]
        con.close()
        return v

    def check_all(self):
        """e2fsck -fn, then every recording file decoded and set against the database."""
        subprocess.run(["e2fsck", "-p", self.loop], capture_output=True)  # the journal, as a boot would
        r = subprocess.run(["e2fsck", "-fn", self.loop], capture_output=True, text=True)
        out = {"e2fsck_rc": r.returncode, "e2fsck": "clean" if r.returncode == 0 else f"rc {r.returncode}: {r.stdout[-500:]}"}
        self.mount(ro=True)
        tmpdb = f"{self.tmp}/db"
        os.mkdir(tmpdb)
        for suffix in ("", "-wal"):
            src = f"{self.mnt}/oxinvr.db{suffix}"
            if os.path.exists(src):
                subprocess.run(["cp", src, f"{tmpdb}/oxinvr.db{suffix}"], check=True)
        con = sqlite3.connect(f"{tmpdb}/oxinvr.db")
        out["schema"] = con.execute("PRAGMA user_version").fetchone()[0]
        rows = {p: (f, c) for p, f, c in con.execute("SELECT path, frames, state FROM segments")}
        garbage = {p for (p,) in con.execute("SELECT path FROM garbage")} if con.execute(
            "SELECT 1 FROM sqlite_master WHERE name = 'garbage'").fetchone() else set()
        con.close()
        files = []
        for root, _, names in os.walk(f"{self.mnt}/recordings"):
            files += [os.path.relpath(os.path.join(root, n), self.mnt) for n in names]
        bad = []
        for rel in files:
            frames, err = decode(f"{self.mnt}/{rel}")
            row = rows.get(rel)
            if err or (row and frames < row[0]) or (row and row[1] == "closed" and frames != row[0]):
                bad.append({"path": rel, "err": err, "frames_file": frames, "frames_db": row and row[0]})
        out.update(files=len(files), bad=bad, rows=len(rows),
                   missing=len([p for p in rows if p not in set(files)]),
                   orphans=len([f for f in files if f not in rows and f not in garbage]))
        return out


def main():
    p = argparse.ArgumentParser(description="power cuts on the emulated board")
    p.add_argument("cuts", type=int, nargs="?", default=50)
    p.add_argument("--seed", type=int, default=int(time.time()) % 100000)
    p.add_argument("--delay", type=float, nargs=2, default=(3.0, 30.0), metavar=("MIN", "MAX"),
                   help="seconds of recording before a cut (uniform)")
    p.add_argument("--check-every", type=int, default=1, help="oxinvr check on the box after every K-th cut")
    p.add_argument("--no-migration", dest="migration", action="store_false")
    p.add_argument("--migration-at", type=int, default=0, help="the cut that lands in a migration (default N/2)")
    p.add_argument("--migration-after-commit", action="store_true",
                   help="migration cuts land just after the migration committed (default: every other one)")
    p.add_argument("--report", help="markdown figures, rewritten after each cut")
    p.add_argument("--until", metavar="HH:MM", help="make no new cut after this UTC time (then the final checks)")
    args = p.parse_args()
    if args.cuts < 1:
        sys.exit("power-cuts: N must be >= 1")
    run = Run(args)
    try:
        run.run()
    except Exception as e:  # noqa: BLE001 - any failure still leaves the report and the console tail
        if not isinstance(e, Fail):
            import traceback
            traceback.print_exc()
        log(f"FAIL {e}")
        try:
            tail = open(run.box.log, "rb").read()[-3000:].decode(errors="replace") if run.box.log else ""
            log("--- last console lines ---\n" + tail)
        except OSError:
            pass
        run.write_report(failure=str(e))
        return 1
    finally:
        run.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
