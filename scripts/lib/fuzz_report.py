"""Adds or replaces one target's row in the fuzzing figures (scripts/fuzz).

usage: fuzz_report.py REPORT TARGET SECONDS_RUN EXIT_CODE LOG ARTIFACT_DIR RUSTC_VERSION
Figures come from libFuzzer's own log: the final stats (-print_final_stats=1)
and its last status line (cov: edges, ft: features, corp: inputs/bytes).
"""
import os
import re
import sys
import time

report, target, seconds, rc, log, arts, rustc = sys.argv[1:8]
text = open(log, errors="replace").read()


def stat(name):
    m = re.search(r"stat::%s:\s*(\d+)" % name, text)
    return int(m.group(1)) if m else None


execs = stat("number_of_executed_units")
per_sec = stat("average_exec_per_sec")
status = re.findall(r"#\d+\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/(\S+)", text)
cov, ft, corp, corp_bytes = status[-1] if status else ("?", "?", "?", "?")
# Only what this run wrote (older artifacts stay for reproducing past crashes).
started = time.time() - int(seconds) - 2
crashes = sorted(
    f
    for f in os.listdir(arts)
    if re.match(r"(crash|timeout|oom|leak|slow-unit)-", f) and os.path.getmtime(os.path.join(arts, f)) >= started
)
if rc != "0" and not crashes:
    outcome = f"exit {rc}, see log"
elif crashes:
    outcome = f"{len(crashes)} found: " + ", ".join(crashes)
else:
    outcome = "none"
row = f"| {target} | {int(seconds) / 60:.1f} | {execs if execs is not None else '?'} | {per_sec if per_sec is not None else '?'} | {cov} | {ft} | {corp} ({corp_bytes}) | {outcome} |"

head = [
    "# Fuzzing figures",
    "",
    "Written by `scripts/fuzz [SECONDS] [TARGET...]` (one row per target, replaced when that",
    "target runs again). libFuzzer through libfuzzer-sys, no sanitizer, debug assertions and",
    "overflow checks on, one target at a time at `nice -n 15` on a shared 2-core machine.",
    "minutes: how long it ran (libFuzzer stops at the first crash); execs/s: libFuzzer's average; cov/ft: edges and features covered",
    "at the end; corpus: inputs kept (seeds from fuzz/corpus/TARGET plus what was found).",
    "",
    f"Toolchain: {rustc}.",
    "",
    "| target | minutes | execs | execs/s | cov | ft | corpus | crashes/hangs |",
    "|---|---|---|---|---|---|---|---|",
]
rows = {}
notes = []  # hand-written sections ("## ...") after the table are kept
if os.path.exists(report):
    for line in open(report):
        m = re.match(r"\| (\w+) \| [\d.]+ \|", line)
        if m:
            rows[m.group(1)] = line.rstrip("\n")
        elif line.startswith("## ") or notes:
            notes.append(line.rstrip("\n"))
rows[target] = row
with open(report, "w") as f:
    f.write("\n".join(head + [rows[k] for k in sorted(rows)] + ([""] + notes if notes else [])) + "\n")
print(row)
