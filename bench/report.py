#!/usr/bin/env python3
"""Turns one run of bench/run.sh (a bench/results/<stamp>/ directory) into markdown: the figures,
the per-trial rows, and where the time goes according to the members' logs. Prints it, and with
--doc FILE replaces the text between the bench:results markers of FILE with it.

Usage: python3 bench/report.py bench/results/<stamp> [--doc docs/benchmarks.md]
"""

import argparse
import csv
import datetime as dt
import glob
import os
import re
import statistics
import sys

BEGIN = "<!-- bench:results:begin -->"
END = "<!-- bench:results:end -->"
UP_GOAL_S = 5.0
CONTEXT = {"Patroni": 15.0, "pg_auto_failover": 13.0}  # from the issue; not measured here

# Agent (tracing) lines: 2026-11-21T23:59:33.213034Z  INFO cycle{...}: target: message
AGENT_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)Z\s+\w+\s+(.*)$")
# PostgreSQL lines: 2026-11-21 23:59:34.329 UTC [14593] LOG:  checkpoint complete: ... total=0.621 s; ...
PG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC \[\d+\] \w+:\s+(.*)$")


def epoch(stamp):
    return dt.datetime.fromisoformat(stamp.replace(" ", "T")).replace(tzinfo=dt.timezone.utc).timestamp()


def read_tsv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def read_kv(path):
    with open(path) as f:
        return dict(line.rstrip("\n").split("\t", 1) for line in f if "\t" in line)


def agent_events(path):
    """(epoch, message) of the agent's lines in a member.log."""
    out = []
    with open(path, errors="replace") as f:
        for line in f:
            m = AGENT_LINE.match(line)
            if m:
                out.append((epoch(m.group(1)), m.group(2)))
    return out


def last_of(events, needle):
    ts = [t for t, msg in events if needle in msg]
    return ts[-1] if ts else None


def first(events, needle, after=None):
    for t, msg in events:
        if needle in msg and (after is None or t >= after):
            return t
    return None


def publish(text, out_dir, doc_path, begin, end, heading):
    """Write `text` to out_dir/results.md, print it, and put it between `begin` and `end` in
    `doc_path` (appended under `heading` when the markers are not there yet)."""
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(text)
    print(text)
    if not doc_path:
        return
    doc = open(doc_path).read() if os.path.exists(doc_path) else ""
    if begin in doc and end in doc:
        doc = doc[: doc.index(begin)] + text.rstrip("\n") + doc[doc.index(end) + len(end):]
    else:
        doc = doc.rstrip("\n") + ("\n\n" if doc else "") + heading + "\n\n" + text
    with open(doc_path, "w") as f:
        f.write(doc)
    print(f"updated {doc_path}", file=sys.stderr)


def num(s):
    """A number from a TSV cell, or None."""
    try:
        return float(s)
    except (TypeError, ValueError):
        return None


def machine_rows(machine):
    """The rows every report's machine table starts with (from machine.tsv)."""
    return [f"| CPUs (`nproc`) | {machine['nproc']} × {machine['cpu']} |",
            f"| memory | {machine['memory']} |",
            f"| kernel | {machine['kernel']} |"]


def fmt(x, digits=2):
    return "–" if x is None else f"{x:.{digits}f}"


def stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None, None
    return statistics.median(values), min(values), max(values)


def median_or_none(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def gib(n):
    return f"{int(n) / 2**30:.2f} GiB"


# ---- benchmark 1 ----------------------------------------------------------------------------------

def up_milestones(out_dir, trial, t0):
    """Seconds after the command started at which each step of `up` happened (from the logs)."""
    logs = {os.path.basename(p)[:-4]: agent_events(p) for p in glob.glob(f"{out_dir}/up-{trial}-logs/node-*.log")}
    primary = next((n for n, ev in logs.items() if first(ev, "bootstrapping a new cluster")), None)
    if primary is None:
        return {}
    p = logs[primary]
    reps = [ev for n, ev in logs.items() if n != primary]
    rel = lambda t: None if t is None else t - t0
    last = lambda ts: None if not ts or None in ts else max(ts)
    sup = os.path.join(out_dir, f"up-{trial}-logs", "supervisor.log")
    sup_started = first(agent_events(sup), "supervisor started") if os.path.exists(sup) else None
    return {
        "supervisor started": rel(sup_started),
        "primary agent started": rel(first(p, "agent started")),
        "primary: initdb done": rel(first(p, "initialized a new database cluster")),
        "primary: postgres started": rel(first(p, "started postgres")),
        "primary: bootstrapped, leader lease taken": rel(first(p, "bootstrapped a new cluster")),
        "primary: replicas' replication slots created": rel(last_of(p, "created replication slot")),
        "replicas: clone started (last of 2)": rel(last([first(ev, "cloning ") for ev in reps])),
        "replicas: pg_basebackup done (last of 2)": rel(last([first(ev, "cloned data directory") for ev in reps])),
        "replicas: streaming (last of 2)": rel(last([first(ev, "replica, streaming from") for ev in reps])),
    }


def report_up(out_dir):
    rows = read_tsv(os.path.join(out_dir, "up.tsv"))
    ok = [r for r in rows if r["ok"] == "1"]
    wall = [float(r["wall_s"]) for r in ok]
    ready = [float(r["ready_in_s"]) for r in ok if r["ready_in_s"] not in ("", "-")]
    w_med, w_min, w_max = stats(wall)
    r_med, r_min, r_max = stats(ready)
    md = ["### 1. Time to ready: `pgrepl up --replicas 2`", ""]
    md.append(f"{len(ok)} of {len(rows)} trials succeeded" + ("." if len(ok) == len(rows) else "; failed trials are left out of the figures."))
    md += ["", "| | median | min | max |", "|---|---:|---:|---:|"]
    md.append(f"| wall time of `up`, measured by the script (s) | **{fmt(w_med)}** | {fmt(w_min)} | {fmt(w_max)} |")
    md.append(f"| pgrepl's own \"ready in\" (s) | {fmt(r_med, 1)} | {fmt(r_min, 1)} | {fmt(r_max, 1)} |")
    if w_med is not None:
        verdict = "met" if w_med <= UP_GOAL_S else "**not met**"
        md += ["", f"Goal: at most {UP_GOAL_S:.0f} s. Median {fmt(w_med)} s: {verdict}"
               + (f" ({sum(w <= UP_GOAL_S for w in wall)} of {len(wall)} trials within it)." if wall else ".")]
    md += ["", "| trial | wall (s) | \"ready in\" (s) | 1-min load at start | ok |", "|---:|---:|---:|---:|:---:|"]
    for r in rows:
        md.append(f"| {r['trial']} | {r['wall_s']} | {r['ready_in_s']} | {r['load']} | {'yes' if r['ok'] == '1' else 'no'} |")
    # where the time goes
    per_trial = [up_milestones(out_dir, r["trial"], float(r["t0"])) for r in ok]
    per_trial = [m for m in per_trial if m]
    if per_trial:
        md += ["", "Where the time goes (seconds after `up` started, from the timestamps in the members' and the supervisor's logs; "
               "median over the trials):", "", "| step | median (s) |", "|---|---:|"]
        for key in per_trial[0]:
            md.append(f"| {key} | {fmt(median_or_none([m.get(key) for m in per_trial]))} |")
        md.append(f"| `up` returned | {fmt(w_med)} |")
    return md


# ---- benchmark 2 ----------------------------------------------------------------------------------

def checkpoints(primary_log, t0, t1):
    """Seconds of the checkpoints (as PostgreSQL logged them) that completed within [t0, t1]."""
    total = 0.0
    found = False
    if not primary_log or not os.path.exists(primary_log):
        return None
    with open(primary_log, errors="replace") as f:
        for line in f:
            m = PG_LINE.match(line)
            if not m or not m.group(2).startswith("checkpoint complete"):
                continue
            t = epoch(m.group(1))
            if t0 <= t <= t1 + 0.01:
                k = re.search(r"total=([\d.]+) s", m.group(2))
                if k:
                    total += float(k.group(1))
                    found = True
    return total if found else None


def scale_milestones(out_dir, r):
    logs = glob.glob(f"{out_dir}/scale-{r['trial']}-{r['member']}.log")
    if not logs:
        return {}
    ev = agent_events(logs[0])
    t0 = float(r["t0"])
    rel = lambda t: None if t is None else t - t0
    agent = first(ev, "agent started", after=t0 - 1)
    return {
        "agent of the new member started": rel(agent),
        "clone started (slot exists on the primary)": rel(first(ev, "cloning ", after=agent)),
        "pg_basebackup done": rel(first(ev, "cloned data directory", after=agent)),
        "postgres started (standby)": rel(first(ev, "started postgres", after=agent)),
        "agent reports streaming": rel(first(ev, "replica, streaming from", after=agent)),
    }


def report_scale(out_dir):
    rows = read_tsv(os.path.join(out_dir, "scale.tsv"))
    data = read_kv(os.path.join(out_dir, "dataset.tsv"))
    primary_log = next(iter(glob.glob(f"{out_dir}/scale-primary-*.log")), None)
    md = ["### 2. Adding a replica to a primary holding ~1 GB", ""]
    md.append(f"Data: `pgbench -i -s {data['pgbench_scale']}` into database `postgres` (loaded and checkpointed in "
              f"{data['load_seconds']} s): `pg_database_size('postgres')` = {gib(data['db_postgres_bytes'])}, "
              f"all databases {gib(data['all_databases_bytes'])}.")
    side = {k: [r for r in rows if r["kind"] == k and r["ok"] == "1"] for k in ("pgrepl", "pg_basebackup")}
    s = {k: stats([float(r["wall_s"]) for r in v]) for k, v in side.items()}
    md += ["", "| | median | min | max |", "|---|---:|---:|---:|"]
    md.append(f"| `pgrepl scale 1`, until the new replica streams (s) | **{fmt(s['pgrepl'][0])}** | {fmt(s['pgrepl'][1])} | {fmt(s['pgrepl'][2])} |")
    md.append(f"| `pg_basebackup -X stream -c fast` alone (s) | **{fmt(s['pg_basebackup'][0])}** | {fmt(s['pg_basebackup'][1])} | {fmt(s['pg_basebackup'][2])} |")
    if s["pgrepl"][0] and s["pg_basebackup"][0]:
        ratio = s["pgrepl"][0] / s["pg_basebackup"][0]
        pair = [float(a["wall_s"]) / float(b["wall_s"]) for a, b in zip(side["pgrepl"], side["pg_basebackup"])]
        md.append(f"| ratio pgrepl / pg_basebackup (medians; per trial pair {', '.join(f'{p:.2f}' for p in pair)}) | **{ratio:.2f}** | {min(pair):.2f} | {max(pair):.2f} |")
        md.append(f"| pgrepl's overhead, median difference (s) | {fmt(s['pgrepl'][0] - s['pg_basebackup'][0])} | | |")
    md += ["", "For context, the issue reports " + " and ".join(f"{k} {v:.0f} s" for k, v in CONTEXT.items())
           + " to reach the same state on this machine (not measured by this script)."]
    md += ["", "| trial | what | wall (s) | bytes copied | checkpoint during it (s) | 1-min load at start | `scale 0` after it (s) |",
           "|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        ck = checkpoints(primary_log, float(r["t0"]), float(r["t1"]))
        copied = gib(r["copied_bytes"]) if r["copied_bytes"] not in ("", "-") else "–"
        what = f"pgrepl scale 1 ({r['member']})" if r["kind"] == "pgrepl" else "pg_basebackup"
        bad = "" if r["ok"] == "1" else " (failed)"
        md.append(f"| {r['trial']} | {what}{bad} | {r['wall_s']} | {copied} | {fmt(ck)} | {r['load']} | {r['scale0_s'] if r['scale0_s'] != '-' else ''} |")
    per_trial = [scale_milestones(out_dir, r) for r in side["pgrepl"]]
    per_trial = [m for m in per_trial if m]
    if per_trial:
        md += ["", "Where the time of `scale 1` goes (seconds after the command started, from the new member's log; median):", "",
               "| step | median (s) |", "|---|---:|"]
        for key in per_trial[0]:
            md.append(f"| {key} | {fmt(median_or_none([m.get(key) for m in per_trial]))} |")
        md.append(f"| `scale 1` returned | {fmt(s['pgrepl'][0])} |")
        clone = median_or_none([(m["pg_basebackup done"] - m["clone started (slot exists on the primary)"])
                                if m.get("pg_basebackup done") is not None and m.get("clone started (slot exists on the primary)") is not None else None
                                for m in per_trial])
        if clone is not None:
            md += ["", f"pgrepl's own pg_basebackup took {fmt(clone)} s (median), against {fmt(s['pg_basebackup'][0])} s for the plain one."]
    return md


def parse_command_line():
    """A report script's command line: the raw results directory, --doc (the markdown file to
    rewrite), and the run's machine.tsv read."""
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--doc")
    a = ap.parse_args()
    out_dir = a.out_dir.rstrip("/")
    return out_dir, a.doc, read_kv(os.path.join(out_dir, "machine.tsv"))


def main():
    out_dir, doc, machine = parse_command_line()
    md = [BEGIN, "",
          f"Run of {machine['date_utc']} with `bash bench/run.sh`; raw results in `bench/results/{os.path.basename(out_dir)}/` "
          "(not committed).", "",
          "| machine | |", "|---|---|",
          *machine_rows(machine),
          f"| PostgreSQL | {machine['postgres']} |",
          f"| /tmp (cluster directories) | {machine['fs_tmp']} |",
          f"| pgrepl | commit {machine['pgrepl_commit']}, release binary {machine['pgrepl_binary']} |",
          f"| 1/5/15-min load when the run started | {machine['load_at_start']} |",
          ""]
    md += report_up(out_dir) + [""]
    if os.path.exists(os.path.join(out_dir, "scale.tsv")):
        md += report_scale(out_dir) + [""]
    md.append(END)
    publish("\n".join(md) + "\n", out_dir, doc, BEGIN, END, "## Results")

if __name__ == "__main__":
    main()
