#!/usr/bin/env python3
"""Turns one run of bench/failover.sh (a bench/results/<stamp>-failover/ directory) into markdown:
per system and configuration, the unplanned failovers (time from the kill to the first
acknowledged write, write gap, rows lost; median and max) and the planned switchovers (write
gap), then every trial. Prints it, and with --doc FILE replaces the text between the
bench:failover markers of FILE with it (appending a "Failover" section when there are none).

Usage: python3 bench/failover_report.py bench/results/<stamp>-failover [--doc docs/benchmarks.md]
"""

import os
import statistics

from report import machine_rows, num, parse_command_line, publish, read_tsv  # shared with the other benchmark reports

BEGIN = "<!-- bench:failover:begin -->"
END = "<!-- bench:failover:end -->"
# from the issue, measured before on this kind of machine; not by this script
REFERENCE = ("Patroni at its defaults 23–26 s to bring writes back through HAProxy after the primary's Patroni "
             "and PostgreSQL were killed, tuned (ttl 10, loop_wait 1, retry_timeout 4) 10.5 s; a planned "
             "switchover blocked writes for 2.1–2.6 s")


def fmt(x, digits=2):
    return "–" if x is None else f"{x:.{digits}f}"


def med_max(values):
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    return f"{fmt(statistics.median(values))} / {fmt(max(values))}"


def promoted(r):
    """Seconds from the fault to the new primary's promotion (PostgreSQL's new timeline), if logged."""
    return num(r.get("promoted_s", "-").split("/")[-1])


def lost_summary(rows):
    lost = [int(r["lost"]) for r in rows if r["lost"] not in ("", "-")]
    if not lost:
        return "–"
    unread = len(rows) - len(lost)
    return f"{sum(lost)} ({max(lost)})" + (f", {unread} unread" if unread else "")


def main():
    out_dir, doc, machine = parse_command_line()
    rows = read_tsv(os.path.join(out_dir, "trials.tsv"))
    timeout = machine.get("timeout_s", "60")
    knobs = []
    if machine.get("trials") != "5":
        knobs.append(f"BENCH_FAILOVER_TRIALS={machine.get('trials')}")
    if machine.get("switchovers") != "3":
        knobs.append(f"BENCH_FAILOVER_SWITCHOVERS={machine.get('switchovers')}")
    if machine.get("systems") != "pgrepl pgrepl-sync patroni-defaults patroni-tuned":
        knobs.append(f"BENCH_FAILOVER_SYSTEMS=\"{machine.get('systems')}\"")
    command = " ".join(knobs + ["bash bench/failover.sh"])

    md = [BEGIN, "",
          f"Run of {machine['date_utc']} with `{command}`; raw results in `bench/results/{os.path.basename(out_dir)}/` "
          "(not committed).", "",
          "| machine | |", "|---|---|",
          *machine_rows(machine),
          f"| PostgreSQL | {machine['postgres']} |"]
    if "pgrepl_commit" in machine:
        md.append(f"| pgrepl | commit {machine['pgrepl_commit']}, release binary {machine.get('pgrepl_binary', '?')} |")
        sw = machine.get("pgrepl_switchover", "promote %s").replace("%s", "MEMBER")
        md.append(f"| pgrepl's planned switchover | `pgrepl --dir DIR {sw}` |")
    for k in ("patroni", "etcd", "haproxy", "psycopg2"):
        if k in machine:
            md.append(f"| {k} | {machine[k]} |")
    md += [f"| writer | one insert every {machine.get('interval_ms', '10')} ms through the read-write endpoint |",
           f"| 1/5/15-min load when the run started | {machine['load_at_start']} |", ""]

    groups = []
    for r in rows:
        key = (r["system"], r["config"])
        if key not in groups:
            groups.append(key)

    md += ["Unplanned: kill -9 of the primary's member under the writer. *first write*: seconds from the kill "
           "to the first acknowledged insert on a connection opened after it; *write gap*: the longest interval "
           "between two acknowledged inserts that spans the fault; *rows lost*: acknowledged ids missing on the "
           "primary afterwards, total over the trials (most in one trial); *new primary promoted*: from the kill to "
           "the new primary being promoted, as its log says (Patroni: PostgreSQL selected a new timeline; pgrepl: "
           "the agent logged \"promoted to primary\"): the rest of *first write* is the endpoint noticing (for "
           "Patroni, HAProxy's health checks). Planned: the write gap "
           "around the switchover command, and how long the command took. Median / max over the trials.", "",
           "| system | configuration | failed over (within " + timeout + " s) | first write (s) | write gap (s) | "
           "new primary promoted (s) | rows lost | switchovers | switchover write gap (s) | switchover command (s) | "
           "rows lost (switchovers) |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for system, config in groups:
        kills = [r for r in rows if (r["system"], r["config"]) == (system, config) and r["kind"] == "kill"]
        sws = [r for r in rows if (r["system"], r["config"]) == (system, config) and r["kind"] == "switchover"]
        ok = [r for r in kills if r["failover"] == "yes"]
        sw_ok = [r for r in sws if r["failover"] == "yes"]
        md.append(f"| {system} | {config} | {len(ok)} of {len(kills)} | **{med_max([num(r['ttfw_s']) for r in ok])}** | "
                  f"{med_max([num(r['gap_s']) for r in ok])} | {med_max([promoted(r) for r in ok])} | "
                  f"{lost_summary(kills)} | {len(sw_ok)} of {len(sws)} | "
                  f"**{med_max([num(r['gap_s']) for r in sw_ok])}** | {med_max([num(r['cmd_s']) for r in sws])} | "
                  f"{lost_summary(sws)} |")
    md += ["", f"For reference, the issue reports {REFERENCE} (not measured by this script).", ""]

    md += ["<details><summary>Every trial</summary>", "",
           "*lock / promoted*: seconds after the fault at which the new primary's Patroni logged that it took the "
           "leader lock, and at which its PostgreSQL selected a new timeline (pgrepl: at which its agent took the "
           "leader lease, and promoted its PostgreSQL); *rejoin*: seconds from bringing the "
           "killed member back (or from the end of the switchover) until the cluster had converged again; *load*: "
           "the 1-minute load average when the trial started.", "",
           "| system | configuration | trial | kind | old → new primary | first write (s) | write gap (s) | "
           "lock / promoted (s) | command (s) | acked | uncertain | lost | reconnects | rejoin (s) | load | note |",
           "|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lost = r["lost"] + (f" ({r['lost_ids']})" if r["lost_ids"] not in ("", "-") else "")
        note = r["note"] if r["note"] != "-" else ""
        if r["converged"] == "no":
            note = (note + "; did not converge afterwards").lstrip("; ")
        if r["cmd_rc"] not in ("-", "0"):
            note = (note + f"; command exit {r['cmd_rc']}").lstrip("; ")
        md.append(f"| {r['system']} | {r['config']} | {r['trial']} | {r['kind']} | {r['old_primary']} → {r['new_primary']} | "
                  f"{r['ttfw_s']} | {r['gap_s']} | {r['promoted_s']} | {r['cmd_s']} | {r['acked']} | {r['uncertain']} | "
                  f"{lost} | {r['reconnects']} | {r['rejoin_s']} | {r.get('load', '–')} | {note} |")
    md += ["", "</details>", "", END]
    publish("\n".join(md) + "\n", out_dir, doc, BEGIN, END, "## Failover")


if __name__ == "__main__":
    main()
