#!/usr/bin/python3
"""Fills a stopped recorder's data directory with weeks of history, for the
retention-at-scale test and the start-up benchmark.

For every stream that has a closed segment, that segment is the seed: COUNT
copies are added before the stream's oldest recording, back to back, each a
hard link to the seed's file (so every row points to a real playable file of
exactly its stated size, as reconciliation checks) and a row like the seed's.
With --fragments N the row's fragment index is the seed's repeated up to N
entries, the size of a real 5-minute segment's index (1 fragment per second).

    fill_history.py --data DIR --count 8640 --segment-seconds 300 [--fragments 300]
                    [--gap-days D]

--gap-days leaves D days between the new history and the seed (to make it older
than a retention limit). Prints how many rows and links it made.
"""
import argparse
import datetime
import os
import sqlite3
import sys

ENTRY = 29  # bytes per fragment index entry (media::FragmentEntry::ENCODED_LEN)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--count", type=int, required=True, help="segments to add per stream")
    p.add_argument("--segment-seconds", type=int, default=300)
    p.add_argument("--fragments", type=int, default=0, help="fragment index entries per row (0: the seed's)")
    p.add_argument("--gap-days", type=int, default=0)
    a = p.parse_args()

    db = sqlite3.connect(os.path.join(a.data, "oxinvr.db"))
    cols = [r[1] for r in db.execute("PRAGMA table_info(segments)")]
    skip = {"id", "path", "start_ms", "end_ms", "state", "fragments"}
    copy = [c for c in cols if c not in skip]
    streams = db.execute("SELECT id, name FROM streams ORDER BY id").fetchall()
    seg_ms = a.segment_seconds * 1000
    rows = links = 0
    for stream_id, name in streams:
        seed = db.execute(
            f"SELECT path, fragments, {', '.join(copy)} FROM segments "
            "WHERE stream_id = ? AND state = 'closed' ORDER BY start_ms LIMIT 1",
            (stream_id,),
        ).fetchone()
        if seed is None:
            print(f"fill_history: stream {name} has no closed segment; skipped", file=sys.stderr)
            continue
        seed_path, blob, values = seed[0], seed[1], list(seed[2:])
        if a.fragments and blob:
            reps = -(-a.fragments // (len(blob) // ENTRY))
            blob = (blob * reps)[: a.fragments * ENTRY]
        (oldest,) = db.execute("SELECT MIN(start_ms) FROM segments WHERE stream_id = ?", (stream_id,)).fetchone()
        end = oldest - a.gap_days * 86_400_000
        seed_file = os.path.join(a.data, seed_path)
        batch = []
        for k in range(a.count):
            start = end - (k + 1) * seg_ms
            day = datetime.datetime.fromtimestamp(start / 1000, datetime.timezone.utc).strftime("%Y-%m-%d")
            rel = f"recordings/{name}/{day}/{start}.mp4"
            full = os.path.join(a.data, rel)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            os.link(seed_file, full)
            links += 1
            batch.append([stream_id, rel, "closed", start, start + seg_ms, blob] + values[1:])
        names = ["stream_id", "path", "state", "start_ms", "end_ms", "fragments"] + copy[1:]
        assert copy[0] == "stream_id", copy
        db.executemany(
            f"INSERT INTO segments ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})", batch
        )
        rows += len(batch)
    db.commit()
    print(f"fill_history: {rows} rows, {links} hard links in {a.data}")


if __name__ == "__main__":
    main()
