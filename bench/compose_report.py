#!/usr/bin/env python3
"""Turns one run of bench/compose.sh (a bench/results/<stamp>-compose/ directory) into markdown:
per mode, `make up` to the first write and to three members streaming; `docker kill` and
`docker stop` of the primary (time to the first write after the fault, write gap, rows lost;
median, min, max); beside them, when the run has one (its `failover` link), bench/failover.sh's
figures on this machine (pgrepl's processes on one machine, Debian's Patroni at its defaults);
then every trial. Prints it, and with --doc FILE replaces the text between the bench:compose
markers of FILE with it (appending a "HA compose cluster" section when there are none).

Usage: python3 bench/compose_report.py bench/results/<stamp>-compose [--doc docs/benchmarks.md]
"""

import json
import os
import statistics

from report import machine_rows, num, parse_command_line, publish, read_kv, read_tsv  # shared with the other reports

BEGIN = "<!-- bench:compose:begin -->"
END = "<!-- bench:compose:end -->"
KILL_GOAL_S = 5.0
STOP_GAP_GOAL_S = 1.0
MODE = {"async": "async (`PGREPL_SYNCHRONOUS=off`)", "sync": "synchronous (`PGREPL_SYNCHRONOUS=on`)"}


def fmt(x, digits=2):
    return "–" if x is None else f"{x:.{digits}f}"


def mmm(values):
    """median (min–max) of the values that are there."""
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}–{fmt(max(values))})"


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def lost_summary(rows):
    lost = [r["lost"] for r in rows if r.get("lost") is not None]
    if not lost:
        return "–"
    unread = len(rows) - len(lost)
    return f"{sum(lost)} (of {sum(r['acked'] for r in rows)} acked)" + (f", {unread} unread" if unread else "")


def baseline(out_dir):
    """bench/failover.sh's trials and machine.tsv, when the run has them."""
    d = os.path.join(out_dir, "failover")
    if not os.path.exists(os.path.join(d, "trials.tsv")):
        return None, None
    return read_tsv(os.path.join(d, "trials.tsv")), read_kv(os.path.join(d, "machine.tsv"))


def main():
    out_dir, doc, machine = parse_command_line()
    with open(os.path.join(out_dir, "trials.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    base, base_machine = baseline(out_dir)
    modes = []
    for r in rows:
        if r["mode"] not in modes:
            modes.append(r["mode"])

    knobs = []
    if machine.get("modes") != "async sync":
        knobs.append(f"BENCH_COMPOSE_MODES=\"{machine.get('modes')}\"")
    if machine.get("up_trials") != "5":
        knobs.append(f"BENCH_COMPOSE_UP_TRIALS={machine.get('up_trials')}")
    if machine.get("trials") != "5":
        knobs.append(f"BENCH_COMPOSE_TRIALS={machine.get('trials')}")
    if base_machine and base_machine.get("trials") != "5":
        knobs.append(f"BENCH_FAILOVER_TRIALS={base_machine.get('trials')}")
    if base_machine and base_machine.get("switchovers") != "3":
        knobs.append(f"BENCH_FAILOVER_SWITCHOVERS={base_machine.get('switchovers')}")
    command = " ".join(knobs + ["bash bench/compose.sh"])

    md = [BEGIN, "",
          f"Run of {machine['date_utc']} with `{command}`; raw results in "
          f"`bench/results/{os.path.basename(out_dir)}/` (not committed).", "",
          "| machine | |", "|---|---|",
          *machine_rows(machine),
          f"| Docker | engine {machine['docker']}, docker-compose {machine['docker_compose']} |",
          f"| image | {machine['image']}: {machine['image_pgrepl']}, {machine['image_postgres']}, {machine['image_etcd']} |",
          f"| checkout | commit {machine['commit']} (the compose file and the measuring test) |",
          "| writer | the test kit's, on the host: one insert per transaction through the published rw port "
          "(TLS, verify-full against the cluster's CA), 5 ms apart |",
          f"| 1/5/15-min load | {machine['load_at_start']} when the run started, "
          f"{machine.get('load_after_compose', '?')} after the compose trials |", ""]

    md += ["*up*: from `make up` of a fresh project (empty volumes; the image already there) to the first "
           "write acknowledged through the published rw port by a client connecting then, and to all three "
           "members running or streaming on one timeline (`pgrepl status` in a member). *docker kill* / "
           "*docker stop*: of the primary's container under the writer; *first write*: seconds from the command "
           "to the acknowledged write that ends the longest write gap; *write gap*: that gap; *rows lost*: "
           "acknowledged ids missing on the new primary. Median (min–max).", "",
           "| mode | up: first write (s) | up: 3 streaming (s) | docker kill: first write (s) | "
           "docker kill: write gap (s) | docker kill: rows lost | docker stop: write gap (s) | "
           "docker stop: first write (s) | docker stop: rows lost |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for mode in modes:
        ups = [r for r in rows if r["mode"] == mode and r["kind"] == "up"]
        kills = [r for r in rows if r["mode"] == mode and r["kind"] == "kill"]
        stops = [r for r in rows if r["mode"] == mode and r["kind"] == "stop"]
        k_ok = [r for r in kills if r["failed_over"]]
        s_ok = [r for r in stops if r["failed_over"]]
        k_note = "" if len(k_ok) == len(kills) else f" ({len(kills) - len(k_ok)} of {len(kills)} did not fail over)"
        s_note = "" if len(s_ok) == len(stops) else f" ({len(stops) - len(s_ok)} of {len(stops)} did not fail over)"
        md.append(f"| {MODE.get(mode, mode)} | {mmm([r['first_write_s'] for r in ups])} | "
                  f"{mmm([r['streaming_s'] for r in ups])} | **{mmm([r['recovery_s'] for r in k_ok])}**{k_note} | "
                  f"{mmm([r['gap_s'] for r in k_ok])} | {lost_summary(kills)} | "
                  f"**{mmm([r['gap_s'] for r in s_ok])}**{s_note} | {mmm([r['recovery_s'] for r in s_ok])} | "
                  f"{lost_summary(stops)} |")
    md.append("")
    for mode in modes:
        k = median([r["recovery_s"] for r in rows if r["mode"] == mode and r["kind"] == "kill" and r["failed_over"]])
        s = median([r["gap_s"] for r in rows if r["mode"] == mode and r["kind"] == "stop" and r["failed_over"]])
        md.append(f"Goals, {mode}: docker kill to the first write ≤ {KILL_GOAL_S:.0f} s: "
                  f"{'met' if k is not None and k <= KILL_GOAL_S else 'not met'} (median {fmt(k)} s); docker stop's "
                  f"write gap < {STOP_GAP_GOAL_S:.0f} s: {'met' if s is not None and s < STOP_GAP_GOAL_S else 'not met'} "
                  f"(median {fmt(s)} s).")
    steps = [r["step_s"] for r in rows if r["kind"] == "up" and r.get("step_s") is not None]
    if steps:
        md.append(f"The up figures are polled: one step (a `pgrepl status` through `docker exec` in a member, and "
                  f"a write attempt) took {fmt(min(steps))}–{fmt(max(steps))} s on average per trial, their "
                  f"resolution.")
    md.append("")

    if base:
        systems = []
        for r in base:
            if r["system"] + "/" + r["config"] not in systems:
                systems.append(r["system"] + "/" + r["config"])
        md += ["In the same run, on the same machine, bench/failover.sh (section \"Failover\" says how: kill -9 of "
               "the primary member's processes, its own writer, 10 ms apart, through the system's rw endpoint; "
               "*first write*: the first acknowledged insert on a connection opened after the kill; a "
               "planned switchover in place of `docker stop`):", "",
               "| system | configuration | failed over | kill: first write (s) | kill: write gap (s) | kill: rows lost | "
               "switchover: write gap (s) |",
               "|---|---|---:|---:|---:|---:|---:|"]
        for key in systems:
            kills = [r for r in base if r["system"] + "/" + r["config"] == key and r["kind"] == "kill"]
            sws = [r for r in base if r["system"] + "/" + r["config"] == key and r["kind"] == "switchover"]
            ok = [r for r in kills if r["failover"] == "yes"]
            lost = [int(r["lost"]) for r in kills if r["lost"] not in ("", "-")]
            lost_text = "–" if not lost else str(sum(lost)) + (
                f" (ids {', '.join(r['lost_ids'] for r in kills if r['lost'] not in ('', '-', '0'))}; "
                f"{sum(1 for n in lost if n)} of {len(lost)} kills)" if sum(lost) else "")
            md.append(f"| {kills[0]['system'] if kills else key} | {kills[0]['config'] if kills else ''} | "
                      f"{len(ok)} of {len(kills)} | **{mmm([num(r['ttfw_s']) for r in ok])}** | "
                      f"{mmm([num(r['gap_s']) for r in ok])} | {lost_text} | "
                      f"{mmm([num(r['gap_s']) for r in sws if r['failover'] == 'yes'])} |")
        md += ["", f"Baseline versions: {base_machine.get('patroni', '?')}; {base_machine.get('etcd', '?')}; "
               f"{base_machine.get('haproxy', '?')}; {base_machine.get('postgres', '?')}; pgrepl commit "
               f"{base_machine.get('pgrepl_commit', '?')}. Load when it started: {base_machine.get('load_at_start', '?')}.", ""]
    else:
        md += ["bench/failover.sh was not run with this one (BENCH_COMPOSE_BASELINE=0).", ""]

    md += ["<details><summary>Every trial</summary>", "",
           "*make up*: how long `make up` itself took; *CA*: when a member first printed the cluster CA (the "
           "client needs it for verify-full); *command*: how long `docker kill` / `docker stop` took to return; "
           "*seen down*: seconds from the command until the other members' status showed the old primary not "
           "running (it is started again only then); "
           "*rejoin*: from `docker start` of the container to the three members converged again; *load*: the "
           "1-minute load average when the trial started.", "",
           "| mode | kind | trial | make up / command (s) | CA (s) | first write (s) | write gap (s) | 3 streaming (s) | "
           "old → new primary | acked | lost | lease released | seen down (s) | rejoin (s) | load |",
           "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        if r["kind"] == "up":
            md.append(f"| {r['mode']} | up | {r['trial']} | {fmt(r['make_up_s'])} | {fmt(r['ca_s'])} | "
                      f"{fmt(r['first_write_s'])} | | {fmt(r['streaming_s'])} | | | | | | | {r['load']} |")
        else:
            lost = "–" if r["lost"] is None else str(r["lost"]) + (f" ({r['lost_ids']})" if r["lost"] else "")
            released = {True: "yes", False: "no"}[r["released_lease"]] if r["kind"] == "stop" else ""
            md.append(f"| {r['mode']} | docker {r['kind']} | {r['trial']} | {fmt(r['cmd_s'])} | | "
                      f"{fmt(r['recovery_s'])} | {fmt(r['gap_s'])} | | {r['old_primary']} → {r['new_primary'] or 'none'} | "
                      f"{r['acked']} | {lost} | {released} | {fmt(r.get('seen_down_s'))} | {fmt(r['rejoin_s'])} | {r['load']} |")
    md += ["", "</details>", "", END]
    publish("\n".join(md) + "\n", out_dir, doc, BEGIN, END, "## HA compose cluster")


if __name__ == "__main__":
    main()
