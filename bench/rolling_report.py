#!/usr/bin/env python3
"""Turns one run of bench/rolling.sh (a bench/results/<stamp>-rolling/ directory) into markdown:
per system and kind of restart, the command's time, the write gap and failed transactions
(median, min, max over the trials), then every trial. Everything is computed from the raw files
of each trial directory: pgbench's per-transaction logs (-l), its outputs, events.tsv (the
script's stamps) and trial.tsv. Prints it, and with --doc FILE replaces the text between the
bench:rolling markers of FILE with it (appending a "Rolling restart" section when there are none).

Usage: python3 bench/rolling_report.py bench/results/<stamp>-rolling [--doc docs/benchmarks.md]
       python3 bench/rolling_report.py --trial bench/results/<stamp>-rolling/<trial>   (one line)
"""

import glob
import os
import re
import statistics
import sys

from report import fmt, machine_rows, parse_command_line, publish, read_kv  # shared with the other benchmark reports

BEGIN = "<!-- bench:rolling:begin -->"
END = "<!-- bench:rolling:end -->"
KINDS = {
    "rolling": "`config set shared_buffers=…` + `restart --rolling --pending`",
    "cluster": "`patronictl restart CLUSTER --force`",
    "inplace": "in-place restart of the primary",
}
PGBENCH_LOG = re.compile(r"^c\d+\.\d+$")  # cI.<pid>: one pgbench run's per-transaction log


def events(t):
    out = {}
    with open(os.path.join(t, "events.tsv")) as f:
        for line in f:
            k, v = line.rstrip("\n").split("\t")
            out.setdefault(k, float(v))
    return out


def commits(t):
    """Completion times (epoch seconds) of the transactions pgbench logged as done, sorted.
    pgbench 15's log line: client_id transaction_no time script_no time_epoch time_us [...];
    a failed transaction's time is "failed" (serialization or deadlock errors only)."""
    times = []
    for p in os.listdir(t):
        if not PGBENCH_LOG.match(p):
            continue
        with open(os.path.join(t, p)) as f:
            for line in f:
                x = line.split()
                if len(x) >= 6 and x[2].isdigit():
                    times.append(int(x[4]) + int(x[5]) / 1e6)
    return sorted(times)


def pgbench_failures(t):
    """(transactions ended by a lost connection, failed connection attempts, failed transactions
    pgbench counted itself) over every run of every client."""
    in_tx = conn = counted = 0
    for p in glob.glob(os.path.join(t, "c*.out")):
        with open(p, errors="replace") as f:
            for line in f:
                if "aborted in command" in line:
                    in_tx += 1
                elif "aborted while establishing connection" in line or "could not create connection for setup" in line:
                    conn += 1  # a connection per transaction (-C), or the run's first one
                m = re.match(r"number of failed transactions: (\d+)", line)
                if m:
                    counted += int(m.group(1))
    return in_tx, conn, counted


def gaps(times, lo, hi):
    """(length, start) of the intervals between consecutive commits that overlap [lo, hi], longest first."""
    out = [(b - a, a) for a, b in zip(times, times[1:]) if b > lo and a < hi]
    return sorted(out, reverse=True)


def snapshot(t, name):
    out = {}
    try:
        with open(os.path.join(t, name)) as f:
            for line in f:
                x = line.rstrip("\n").split("\t")
                if len(x) == 3:
                    out[x[0]] = (x[1], x[2])
    except OSError:
        pass
    return out


def analyse(t):
    r = read_kv(os.path.join(t, "trial.tsv"))
    ev = events(t)
    times = commits(t)
    w0, w1 = ev["window_start"], ev["restart_end"]
    g = gaps(times, w0, w1)
    r["dir"] = os.path.basename(t)
    r["cmd_s"] = ev["restart_end"] - ev["restart_start"]
    r["set_s"] = ev["pending_seen"] - ev["window_start"] if "pending_seen" in ev else None
    r["gap_s"] = g[0][0] if g else None
    r["gap_at_s"] = g[0][1] - ev["restart_start"] if g else None
    r["gap2_s"] = g[1][0] if len(g) > 1 else None
    # the undisturbed load's own longest interval: from 1 s after the load started to the window
    warm = [x for x in times if ev["load_start"] + 1 <= x <= w0]
    r["idle_gap_s"] = max((b - a for a, b in zip(warm, warm[1:])), default=None)
    r["tps_before"] = len(warm) / (warm[-1] - warm[0]) if len(warm) > 1 else None
    r["committed"] = len(times)
    r["failed_tx"], r["failed_conn"], r["failed_counted"] = pgbench_failures(t)
    h = r.get("history_rows", "-")
    r["lost"] = max(0, len(times) - int(h)) if h.isdigit() else None
    r["unacked"] = max(0, int(h) - len(times)) if h.isdigit() else None
    before, after = snapshot(t, "members-before.tsv"), snapshot(t, "members-after.tsv")
    restarted = [n for n in sorted(after) if n in before and after[n][0] not in ("-", before[n][0])]
    r["restarted"] = restarted
    r["members"] = len(after)
    r["sb_after"] = sorted({v[1] for v in after.values()})
    return r


def one_line(r):
    return (f"{r['kind']}: command {fmt(r['cmd_s'])} s (exit {r['cmd_rc']}), write gap {fmt(r['gap_s'])} s "
            f"(+{fmt(r['gap_at_s'])} s into the restart; next longest {fmt(r['gap2_s'])} s; undisturbed {fmt(r['idle_gap_s'], 3)} s), "
            f"failed transactions {r['failed_tx']}, failed connections {r['failed_conn']}, committed {r['committed']}, "
            f"lost {r['lost']}, restarted {len(r['restarted'])} of {r['members']} ({', '.join(r['restarted'])}), "
            f"shared_buffers after {'/'.join(r['sb_after'])}, primary {r['old_primary']} -> {r['new_primary']}")


def mmm(values, digits=2):
    """median (min–max), or – when there are none."""
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return fmt(values[0], digits)
    return f"{fmt(statistics.median(values), digits)} ({fmt(min(values), digits)}–{fmt(max(values), digits)})"


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--trial":
        print(one_line(analyse(sys.argv[2].rstrip("/"))))
        return
    out_dir, doc, machine = parse_command_line()
    trials = []
    for p in glob.glob(os.path.join(out_dir, "*", "trial.tsv")):
        try:
            trials.append(analyse(os.path.dirname(p)))
        except (OSError, KeyError, ValueError) as e:
            print(f"skipping {p}: {e}", file=sys.stderr)
    order = {s: i for i, s in enumerate(machine.get("systems", "").split())}
    trials.sort(key=lambda r: (order.get(r["system"], 99), list(KINDS).index(r["kind"]), int(r["trial"])))

    knobs = []
    defaults = {"trials": "3", "systems": "pgrepl pgrepl-sync patroni-defaults", "clients": "4", "scale": "10",
                "load_wait_s": "30"}
    names = {"trials": "BENCH_ROLLING_TRIALS", "systems": "BENCH_ROLLING_SYSTEMS", "clients": "BENCH_ROLLING_CLIENTS",
             "scale": "BENCH_ROLLING_SCALE", "load_wait_s": "BENCH_LOAD_WAIT"}
    for k, d in defaults.items():
        if machine.get(k, d) != d:
            v = machine[k]
            knobs.append(f"{names[k]}=\"{v}\"" if " " in v else f"{names[k]}={v}")
    command = " ".join(knobs + ["bash bench/rolling.sh"])

    md = [BEGIN, "",
          f"Run of {machine['date_utc']} with `{command}`; raw results in `bench/results/{os.path.basename(out_dir)}/` "
          "(not committed).", "",
          "| machine | |", "|---|---|",
          *machine_rows(machine),
          f"| PostgreSQL | {machine['postgres']} |",
          f"| pgbench | {machine['pgbench']} |"]
    if "pgrepl_commit" in machine:
        md.append(f"| pgrepl | commit {machine['pgrepl_commit']}, release binary {machine.get('pgrepl_binary', '?')} |")
    for k in ("patroni", "etcd", "haproxy"):
        if k in machine:
            md.append(f"| {k} | {machine[k]} |")
    md += [f"| load | `pgbench -n -N -C -c 1 -T {machine['chunk_s']}` × {machine['clients']} clients, each run again as "
           f"soon as it ends; scale {machine['scale']}; no TLS; through the read-write endpoint |",
           f"| 1/5/15-min load when the run started | {machine['load_at_start']} |", ""]

    md += ["*command*: wall time of the restart command (for *rolling*, `restart --rolling --pending` alone; "
           "*set → pending*: from `config set` to every member showing the parameter pending restart); "
           "*write gap*: the longest interval between two committed transactions (any client) overlapping the "
           "window from the first command's start to the restart command's end; *undisturbed*: the longest such "
           "interval of the same load before the window; *failed tx*: transactions a client lost to a "
           "closed connection (their outcome unknown to it), *failed connects*: connection attempts refused, both "
           "summed over the trial; *lost*: transactions pgbench logged as committed that are missing from "
           "`pgbench_history`, summed over the trials. Median (min–max) over the trials.", "",
           "| system | configuration | restart | trials | command (s) | set → pending (s) | **write gap (s)** | "
           "undisturbed (s) | failed tx | failed connects | lost | members restarted |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    groups = []
    for r in trials:
        if (r["system"], r["config"], r["kind"]) not in groups:
            groups.append((r["system"], r["config"], r["kind"]))
    for system, config, kind in groups:
        rs = [r for r in trials if (r["system"], r["config"], r["kind"]) == (system, config, kind)]
        lost = [r["lost"] for r in rs if r["lost"] is not None]
        restarted = sorted({f"{len(r['restarted'])} of {r['members']}" for r in rs})
        md.append(f"| {system} | {config} | {KINDS.get(kind, kind)} | {len(rs)} | {mmm([r['cmd_s'] for r in rs], 1)} | "
                  f"{mmm([r['set_s'] for r in rs])} | **{mmm([r['gap_s'] for r in rs])}** | "
                  f"{mmm([r['idle_gap_s'] for r in rs], 3)} | {mmm([r['failed_tx'] for r in rs], 0)} | "
                  f"{mmm([r['failed_conn'] for r in rs], 0)} | {sum(lost) if lost else '–'} | {', '.join(restarted)} |")

    md += ["", "<details><summary>Every trial</summary>", "",
           "*gap at*: when the longest interval began, in seconds after the restart command started (negative: "
           "before it, during `config set`); *next*: the second longest interval in the window; *tps*: committed "
           "transactions per second before the window; *unacked*: rows in `pgbench_history` beyond those pgbench "
           "logged (commits whose acknowledgement a lost connection took away); *exit*: the restart command's exit "
           "status; *load*: the 1-minute load average when the trial started.", "",
           "| system | restart | trial | old → new primary | command (s) | write gap (s) | gap at (s) | next (s) | "
           "undisturbed (s) | tps | committed | failed tx | failed connects | lost | unacked | restarted | "
           "shared_buffers after | exit | load |",
           "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|---:|"]
    for r in trials:
        md.append(f"| {r['system']} | {r['kind']} | {r['trial']} | {r['old_primary']} → {r['new_primary']} | "
                  f"{fmt(r['cmd_s'])} | {fmt(r['gap_s'], 3)} | {fmt(r['gap_at_s'])} | {fmt(r['gap2_s'], 3)} | "
                  f"{fmt(r['idle_gap_s'], 3)} | {fmt(r['tps_before'], 0)} | {r['committed']} | {r['failed_tx']} | "
                  f"{r['failed_conn']} | {r['lost'] if r['lost'] is not None else '–'} | "
                  f"{r['unacked'] if r['unacked'] is not None else '–'} | {', '.join(r['restarted']) or 'none'} | "
                  f"{'/'.join(r['sb_after'])} | {r['cmd_rc']} | {r.get('load', '–')} |")
    md += ["", "</details>", "", END]
    publish("\n".join(md) + "\n", out_dir, doc, BEGIN, END, "## Rolling restart")


if __name__ == "__main__":
    main()
