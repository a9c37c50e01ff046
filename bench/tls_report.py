#!/usr/bin/env python3
"""Turns one run of bench/tls.sh (a bench/results/<stamp>-tls/ directory) into markdown: per
pgbench mode and target (direct, rw endpoint) the TPS without and with TLS and their ratio, the
latency and the machine's CPU per transaction; for new connections per transaction (-C) also
the connection time and CPU per connection; and every run. Prints it, and with --doc FILE
replaces the text between the bench:tls markers of FILE with it (appending a section when there
are none).

Usage: python3 bench/tls_report.py bench/results/<stamp>-tls [--doc docs/benchmarks.md]
"""

import os
import statistics

from report import machine_rows, num, parse_command_line, publish, read_tsv  # shared with the other benchmark reports

BEGIN = "<!-- bench:tls:begin -->"
END = "<!-- bench:tls:end -->"
TARGETS = (("direct", "direct (primary's port)"), ("rw", "rw endpoint (router)"))
MODES = {
    "select-only": "select-only (`pgbench -S`)",
    "simple-update": "simple-update (`pgbench -N`)",
    "connect": "a new connection per transaction (`pgbench -S -C`)",
}


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(x, digits=2):
    return "–" if x is None else f"{x:,.{digits}f}"


def ratio(a, b):
    return None if a is None or not b else a / b


def main():
    out_dir, doc, machine = parse_command_line()
    runs = read_tsv(os.path.join(out_dir, "runs.tsv"))
    clk = num(machine.get("clk_tck")) or 100.0
    good = [r for r in runs if r["ok"] == "1"]
    for r in good:
        r["tps_v"] = num(r["tps"])
        r["lat_v"] = num(r["latency_ms"])
        r["conn_v"] = num(r["connection_ms"])
        txns = num(r["txns"])
        ticks = num(r["busy_ticks"])
        # the machine's busy CPU (both CPUs, everything on them) per transaction, in ms
        r["cpu_ms"] = None if not txns or ticks is None else ticks / clk * 1000 / txns

    def pick(mode, target, tls, trial=None):
        return [r for r in good if r["mode"] == mode and r["target"] == target and r["tls"] == tls
                and (trial is None or r["trial"] == trial)]

    def med(mode, target, tls, key):
        return median(r[key] for r in pick(mode, target, tls))

    def per_trial(mode, target):
        out = []
        for trial in sorted({r["trial"] for r in runs if r["trial"] != "0"}, key=int):
            p, t = pick(mode, target, "plain", trial), pick(mode, target, "tls", trial)
            out.append(ratio(t[0]["tps_v"], p[0]["tps_v"]) if p and t else None)
        return ", ".join(fmt(x) for x in out)

    loads = [num(r["load"]) for r in runs if r["ok"] in ("1", "disturbed")]
    loads = [x for x in loads if x is not None]
    n_ok = len(good)
    n_timed = len([r for r in runs if r["ok"] != "warmup"])
    n_disturbed = len([r for r in runs if r["ok"] == "disturbed"])
    n_failed = len([r for r in runs if r["ok"] == "0"])
    n_other = len([r for r in runs if r["ok"] != "warmup" and r.get("other_bench") == "yes"])

    md = [BEGIN, "",
          f"Run of {machine['date_utc']} with `bash bench/tls.sh`; raw results in "
          f"`bench/results/{os.path.basename(out_dir)}/` (not committed).", "",
          "| machine | |", "|---|---|"]
    md += machine_rows(machine)
    md += [f"| PostgreSQL | {machine['postgres']} (shared_buffers {machine['shared_buffers']}, "
           f"synchronous_commit {machine['synchronous_commit']}, ssl on, ssl_min_protocol_version "
           f"{machine['ssl_min_protocol_version']}, password_encryption {machine['password_encryption']}) |",
           f"| TLS sessions (`pg_stat_ssl` of a `verify-full` client) | direct: {machine['tls_session_direct']}; "
           f"through rw: {machine['tls_session_rw']}; server key: {machine['server_key']}; {machine['openssl']} |",
           f"| pgbench | {machine['pgbench']}, scale {machine['pgbench_scale']}, {machine['clients']} clients "
           f"(`-j {machine['threads']}`), `-T {machine['run_seconds']}` (`-C`: `-T {machine['connect_seconds']}`), default (simple) protocol |",
           f"| pgrepl | commit {machine['pgrepl_commit']}, release binary {machine['pgrepl_binary']}; "
           f"router's log: \"{machine['router_mode']}\" |",
           f"| 1/5/15-min load | at the start {machine['load_at_start']}; before the warm-up "
           f"{machine.get('load_before_warmup', '–')}; at the end {machine.get('load_at_end', '–')} |",
           f"| 1-min load at the start of each timed run | median {fmt(median(loads))}, "
           f"min {fmt(min(loads) if loads else None)}, max {fmt(max(loads) if loads else None)} |",
           "",
           f"{n_ok} of {n_timed} timed runs counted ({n_disturbed} disturbed by steal above "
           f"{machine['steal_max']} %, {n_failed} failed; during {n_other} of them another benchmark was running). Every figure is the median over the "
           f"{machine['trials']} trials; *TLS / plain* is the ratio of the medians, then per trial "
           "(each TLS run against the plain run next to it).", ""]

    for mode in ("select-only", "simple-update"):
        if not any(r["mode"] == mode for r in runs):
            continue
        md += [f"#### {MODES[mode]}", "",
               "| target | plain TPS | TLS TPS | TLS / plain | per trial | plain latency (ms) | TLS latency (ms) "
               "| plain CPU ms / 1000 tx | TLS CPU ms / 1000 tx | TLS adds, CPU ms / 1000 tx |",
               "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
        for target, label in TARGETS:
            p, t = med(mode, target, "plain", "tps_v"), med(mode, target, "tls", "tps_v")
            pc, tc = med(mode, target, "plain", "cpu_ms"), med(mode, target, "tls", "cpu_ms")
            md.append(f"| {label} | {fmt(p, 0)} | {fmt(t, 0)} | **{fmt(ratio(t, p))}** | {per_trial(mode, target)} "
                      f"| {fmt(med(mode, target, 'plain', 'lat_v'), 3)} | {fmt(med(mode, target, 'tls', 'lat_v'), 3)} "
                      f"| {fmt(pc * 1000 if pc is not None else None)} | {fmt(tc * 1000 if tc is not None else None)} "
                      f"| {fmt((tc - pc) * 1000 if pc is not None and tc is not None else None)} |")
        md.append("")

    if any(r["mode"] == "connect" for r in runs):
        mode = "connect"
        md += [f"#### Connection set-up: {MODES[mode]}", "",
               "Each transaction opens a connection (TCP, with TLS the handshake and certificate check, "
               "SCRAM authentication, a new backend), runs one `SELECT` and closes it.", "",
               "| target | plain TPS | TLS TPS | TLS / plain | per trial | plain ms / transaction / client "
               "| TLS ms / transaction / client | plain connection (ms) | TLS connection (ms) "
               "| plain CPU ms / connection | TLS CPU ms / connection | TLS adds, CPU ms / connection |",
               "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
        for target, label in TARGETS:
            p, t = med(mode, target, "plain", "tps_v"), med(mode, target, "tls", "tps_v")
            pc, tc = med(mode, target, "plain", "cpu_ms"), med(mode, target, "tls", "cpu_ms")
            md.append(f"| {label} | {fmt(p, 0)} | {fmt(t, 0)} | **{fmt(ratio(t, p))}** | {per_trial(mode, target)} "
                      f"| {fmt(med(mode, target, 'plain', 'lat_v'))} | {fmt(med(mode, target, 'tls', 'lat_v'))} "
                      f"| {fmt(med(mode, target, 'plain', 'conn_v'))} | {fmt(med(mode, target, 'tls', 'conn_v'))} "
                      f"| {fmt(pc)} | {fmt(tc)} | {fmt(tc - pc if pc is not None and tc is not None else None)} |")
        md += ["", "*ms / transaction / client* is pgbench's latency average (connection included); "
               "*connection* is pgbench's average connection time, as its client threads saw it; "
               "*CPU* is the machine's busy time (both CPUs: pgbench, PostgreSQL, the router, the kernel) "
               "during the run per transaction, so per connection.", ""]

    md += ["<details><summary>Every run</summary>", "",
           "| run | trial | mode | target | TLS | TPS | latency (ms) | connection (ms) | transactions "
           "| 1-min load | before: busy/steal %, waited (s) | busy % | steal % | another benchmark running | ok |",
           "|---|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|:---:|:---:|"]
    for r in runs:
        md.append(f"| {r['seq']} | {r['trial']} | {r['mode']} | {r['target']} | {r['tls']} | {r['tps']} "
                  f"| {r['latency_ms']} | {r['connection_ms']} | {r['txns']} | {r['load']} "
                  f"| {r['idle_before']}, {r['idle_waited_s']} | {r['busy_pct']} | {r['steal_pct']} | {r.get('other_bench', '–')} | {r['ok']} |")
    md += ["", "</details>", "", END]
    publish("\n".join(md) + "\n", out_dir, doc, BEGIN, END, "## TLS cost: results")


if __name__ == "__main__":
    main()
