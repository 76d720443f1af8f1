"""Runs Moonfire NVR (a binary the user built, v0.7.30) on cameras like those of
scripts/bench, for the side-by-side comparison (`scripts/bench --moonfire BINARY`).

Moonfire is set up without its interactive `config` TUI: `moonfire-nvr init`
creates the database at its current schema, then the sample file directory,
cameras and streams are inserted straight into its SQLite tables (schema in
Moonfire's server/db/schema.sql; the JSON `config` columns as in its
server/db/json.rs). The sample file directory is inserted with no
`last_complete_open_id` and left empty, so Moonfire's first read-write open
writes the directory's `meta` file itself, as it does for a directory added in
the TUI. Moonfire's own HTTP API has no per-stream live state, so a stream is
"up" when Moonfire's streamer logs `have first key frame` for it (debug level,
enabled with MOONFIRE_LOG).
"""
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid

FIRST_FRAME = "have first key frame"
RETRY = "sleeping for 1 s after error"


def setup(binary, root, urls):
    """Creates a Moonfire database under root/db recording `urls` into
    root/sample; returns the path of its TOML config (HTTP bound to loopback)."""
    db_dir, sample_dir = os.path.join(root, "db"), os.path.join(root, "sample")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(sample_dir)
    r = subprocess.run([binary, "init", "--db-dir", db_dir], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"bench: `{binary} init` failed: {r.stderr.strip()}")
    con = sqlite3.connect(os.path.join(db_dir, "db"))
    with con:
        cur = con.execute("insert into sample_file_dir (uuid, config) values (?, ?)",
                          (uuid.uuid4().bytes, json.dumps({"path": sample_dir})))
        dir_id = cur.lastrowid
        for i, url in enumerate(urls):
            cur = con.execute("insert into camera (uuid, short_name, config) values (?, ?, '{}')",
                              (uuid.uuid4().bytes, f"s{i:02}"))
            # retainBytes: far more than a run writes, so nothing is deleted mid-window;
            # flushIfSec 0 is the TUI's default (empty field).
            stream = {"mode": "record", "url": url, "rtspTransport": "tcp", "retainBytes": 1 << 30,
                      "flushIfSec": 0}
            con.execute("insert into stream (camera_id, sample_file_dir_id, type, config, cum_recordings, "
                        "cum_media_duration_90k, cum_runs) values (?, ?, 'main', ?, 0, 0, 0)",
                        (cur.lastrowid, dir_id, json.dumps(stream)))
    con.close()
    port = _free_port()
    cfg = os.path.join(root, "moonfire.toml")
    with open(cfg, "w") as f:
        f.write(f'dbDir = "{db_dir}"\nuiDir = "{root}/no-ui"\n\n[[binds]]\nipv4 = "127.0.0.1:{port}"\n'
                'allowUnauthenticatedPermissions = { viewVideo = true }\n')
    return cfg


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(binary, cfg, n, log_path, deadline_s):
    """Starts `binary run`; returns (process, bring-up seconds, retries) once every
    one of the n streams has logged its first key frame; retries counts the camera
    connections Moonfire gave up on and tried again meanwhile."""
    env = dict(os.environ, MOONFIRE_LOG="info,moonfire_nvr::streamer=debug", MOONFIRE_FORMAT="systemd",
               TZ="UTC")
    log = open(log_path, "w")
    spawned = time.time()
    proc = subprocess.Popen([binary, "run", "--config", cfg], stdout=log, stderr=subprocess.STDOUT, env=env)
    while True:
        with open(log_path, errors="replace") as f:
            text = f.read()
        up = text.count(FIRST_FRAME)
        if up >= n:
            return proc, time.time() - spawned, text.count(RETRY)
        if time.time() - spawned > deadline_s or proc.poll() is not None:
            proc.kill()
            sys.exit(f"bench: Moonfire had {up} of {n} streams up; see {log_path}")
        time.sleep(0.1)
