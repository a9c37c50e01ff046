#!/usr/bin/env python3
"""Turns one run of bench/router.sh (a bench/results/<stamp>-router/ directory) into markdown:
per pgbench mode a table by client count of TPS, latency and the proxies' CPU per 1,000
transactions, against direct connections to the primary; whether the goal is met; where the
machine's CPU went; and every run. Prints it, and with --doc FILE replaces the text between the
bench:router markers of FILE with it (appending a section when there are none).

Usage: python3 bench/router_report.py bench/results/<stamp>-router [--doc docs/benchmarks.md]
"""

import json
import os
import statistics
import sys

from report import machine_rows, num, parse_command_line, publish, read_tsv  # shared with the other benchmark report

BEGIN = "<!-- bench:router:begin -->"
END = "<!-- bench:router:end -->"
TARGETS = ("direct", "pgrepl", "copy", "haproxy")
PROXY_OF = {"pgrepl": "router", "copy": "copyrouter", "haproxy": "haproxy"}  # the process whose CPU is the proxy's
IDLE_GOAL_MS = 1.0  # what idle connections may add to a proxy's CPU, ms per second
ISSUE_HAPROXY = "HAProxy reached 0.66 of direct TPS (select-only, 8 clients) when the issue was written"


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(x, digits=2):
    return "–" if x is None else f"{x:,.{digits}f}"


def delta(before, after, kind, name):
    a, b = before[kind].get(name), after[kind].get(name)
    return None if a is None or b is None else b - a


def cpu_of_run(out_dir, r):
    """CPU seconds over the run: machine busy and capacity, proxies, PostgreSQL, pgbench."""
    try:
        with open(os.path.join(out_dir, "runs", r["seq"] + ".before.json")) as f:
            before = json.load(f)
        with open(os.path.join(out_dir, "runs", r["seq"] + ".after.json")) as f:
            after = json.load(f)
    except OSError:
        return None
    hz = before["clk_tck"]
    c0, c1 = before["cpu"], after["cpu"]
    d = {k: c1[k] - c0[k] for k in c0}
    # guest time is already counted in user/nice
    total = sum(v for k, v in d.items() if k not in ("guest", "guest_nice"))
    idle = d["idle"] + d["iowait"]
    cpu = {
        "wall": after["t"] - before["t"],
        "capacity": total / hz,
        "busy": (total - idle - d["steal"]) / hz,
        "steal": d["steal"] / hz,
        "softirq": d["softirq"] / hz,
        "pgbench": num(r["pgbench_cpu_s"]),
    }
    for name in ("router", "copyrouter", "haproxy"):
        t = delta(before, after, "pids", name)
        cpu[name] = None if t is None else t / hz
        cpu["csw_" + name] = delta(before, after, "csw", name) if "csw" in before else None
    if r["router_pid"] != r["router_pid_after"]:
        # restarted during the run: the differences mean nothing
        cpu["router"] = cpu["csw_router"] = None
    for name in ("primary", "replica"):
        t = delta(before, after, "trees", name)
        cpu[name] = None if t is None else t / hz
    known = [cpu[k] for k in ("pgbench", "router", "haproxy", "primary", "replica")]
    cpu["rest"] = None if None in known else cpu["busy"] - sum(known)
    return cpu


def idle_section(out_dir):
    """The idle row: what idle connections cost each proxy, from idle.tsv (none: no lines)."""
    path = os.path.join(out_dir, "idle.tsv")
    if not os.path.exists(path):
        return []
    rows = read_tsv(path)
    if not rows:
        return []
    names = {"pgrepl": "pgrepl (spliced)", "copy": "pgrepl copy mode", "haproxy": "HAProxy"}
    n = rows[0]["connections"]
    md = ["", f"#### Idle connections ({int(n):,} open, nothing sent)", "",
          f"Each proxy in turn carried {int(n):,} idle connections (pgbench clients running a script that only "
          "`\\sleep`s, so no byte crosses a connection once it is made); its CPU is utime+stime from "
          f"/proc/PID/stat over {rows[0]['window_s']} s of wall time, first with no connection open, then with them. "
          f"Goal: the idle connections add under {IDLE_GOAL_MS:g} ms per second.", "",
          "| proxy | connections open (at start – end of the window) | seconds to open them | CPU ms / s, none open | "
          "CPU ms / s, idle ones open | added by the idle connections | goal |",
          "|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        none, idle = num(r["ms_per_s_none"]), num(r["ms_per_s_idle"])
        added = None if none is None or idle is None else idle - none
        if added is None:
            verdict = "no data"
        elif int(r["open"]) < int(r["connections"]):
            verdict = f"**not measured**: only {r['open']} of {r['connections']} connections open"
        else:
            verdict = "met" if added < IDLE_GOAL_MS else f"**not met**: {added:.1f} ms per second"
        md.append(f"| {names.get(r['target'], r['target'])} | {r['open']} – {r['open_after']} | {r['seconds_to_open']} | "
                  f"{fmt(none)} | {fmt(idle)} | {fmt(added)} | {verdict} |")
    return md


def per_1000(seconds, txns):
    """CPU seconds over a run -> ms per 1,000 transactions."""
    return None if seconds is None or not txns else seconds / txns * 1000 * 1000


def main():
    out_dir, doc, machine = parse_command_line()
    rows = read_tsv(os.path.join(out_dir, "runs.tsv"))
    for r in rows:
        r["cpu"] = cpu_of_run(out_dir, r)
        r["txns_n"] = num(r["txns"])
    runs = [r for r in rows if r["ok"] == "1"]
    failed = [r for r in rows if r["ok"] == "0"]
    disturbed = [r for r in rows if r["ok"] == "disturbed"]
    modes = list(dict.fromkeys(r["mode"] for r in rows if r["ok"] != "warmup"))
    clients = sorted({int(r["clients"]) for r in rows if r["ok"] != "warmup"})
    repeats = int(machine["repeats"])
    count = lambda mode, c, t: sum(1 for r in runs if r["mode"] == mode and int(r["clients"]) == c and r["target"] == t)
    short = {(mode, c) for mode in modes for c in clients if any(count(mode, c, t) < repeats for t in TARGETS)}
    missing = [f"{mode} {c} clients: " + ", ".join(f"{t} {count(mode, c, t)} of {repeats}" for t in TARGETS if count(mode, c, t) < repeats)
               for mode in modes for c in clients if (mode, c) in short]

    def cell(mode, c, target):
        rs = [r for r in runs if r["mode"] == mode and int(r["clients"]) == c and r["target"] == target]
        out = {"n": len(rs), "tps": median([num(r["tps"]) for r in rs]), "lat": median([num(r["latency_ms"]) for r in rs])}
        for what in ("router", "copyrouter", "haproxy", "pgbench", "primary", "replica", "rest", "busy", "softirq"):
            out[what] = median([per_1000(r["cpu"][what], r["txns_n"]) if r["cpu"] else None for r in rs])
        out["busy_pct"] = median([100 * r["cpu"]["busy"] / r["cpu"]["capacity"] if r["cpu"] and r["cpu"]["capacity"] else None for r in rs])
        out["steal_pct"] = median([100 * r["cpu"]["steal"] / r["cpu"]["capacity"] if r["cpu"] and r["cpu"]["capacity"] else None for r in rs])
        out["proxy"] = out[PROXY_OF[target]] if target in PROXY_OF else None
        out["proxy_csw"] = None
        if target in PROXY_OF:
            key = "csw_" + PROXY_OF[target]
            out["proxy_csw"] = median([r["cpu"][key] / r["txns_n"] if r["cpu"] and r["cpu"][key] is not None and r["txns_n"] else None
                                       for r in rs])
        return out

    ratio = lambda x, y: None if x is None or not y else x / y

    md = [BEGIN, "",
          f"Run of {machine['date_utc']} with `bash bench/router.sh`; raw results in "
          f"`bench/results/{os.path.basename(out_dir)}/` (not committed).", "",
          "| machine | |", "|---|---|",
          *machine_rows(machine),
          f"| PostgreSQL | {machine['postgres']} (shared_buffers {machine['shared_buffers']}, synchronous_commit "
          f"{machine['synchronous_commit']}, synchronous_standby_names '{machine['synchronous_standby_names']}', ssl {machine['ssl']}) |",
          f"| pgbench | {machine['pgbench']}, scale {machine['pgbench_scale']}, `-T {machine['run_seconds']}`, default (simple) protocol |",
          f"| pgrepl | commit {machine['pgrepl_commit']}, release binary {machine['pgrepl_binary']}; router process with {machine['router_threads']} threads; its log: \"{machine.get('router_mode', '?')}\" |",
          f"| pgrepl copy mode | a second `pgrepl router` of the same cluster with `router_splice = copy` ({machine.get('copy_router_threads', '?')} threads) |",
          f"| HAProxy | {machine['haproxy']}; `mode tcp`, nbthread {machine['haproxy_nbthread']} ({machine['haproxy_threads']} threads) |",
          f"| 1/5/15-min load when the run started | {machine['load_at_start']} |",
          "",
          f"{len(runs)} timed runs succeeded" + (f", {len(failed)} failed (left out of the figures: "
                                                  + ", ".join(r["seq"] for r in failed) + ")." if failed else ".")
          + (f" {len(disturbed)} runs were disturbed (the hypervisor stole more than {machine.get('steal_max', '?')} % of the "
             "CPUs during them): left out of the figures, and redone at most twice each." if disturbed else "")
          + f" Every figure is the median over the {machine['repeats']} passes"
          + (", or over fewer where a run is missing (marked †: " + "; ".join(missing) + ")." if missing else "."), ""]

    verdicts = []
    for mode in modes:
        flag = "-S" if mode == "select-only" else "-N"
        md += [f"#### {mode} (`pgbench {flag}`)", "",
               "| clients | direct TPS | pgrepl TPS (× direct) | copy mode TPS (× direct) | HAProxy TPS (× direct) | direct latency (ms) | "
               "pgrepl latency (× direct) | copy mode latency (× direct) | HAProxy latency (× direct) | pgrepl process CPU ms / 1000 tx | "
               "copy mode process CPU ms / 1000 tx | HAProxy process CPU ms / 1000 tx | "
               "pgrepl machine CPU added ms / 1000 tx | copy mode machine CPU added ms / 1000 tx | HAProxy machine CPU added ms / 1000 tx | goal |",
               "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for c in clients:
            d, p, k, h = (cell(mode, c, t) for t in TARGETS)
            tp, tk, th = ratio(p["tps"], d["tps"]), ratio(k["tps"], d["tps"]), ratio(h["tps"], d["tps"])
            lp, lk, lh = ratio(p["lat"], d["lat"]), ratio(k["lat"], d["lat"]), ratio(h["lat"], d["lat"])
            # What the proxy costs the whole machine: busy CPU per transaction beyond direct's. The
            # router's own process CPU misses the work the kernel does for it when it splices.
            added = lambda x: None if x["busy"] is None or d["busy"] is None else x["busy"] - d["busy"]
            ap, ak, ah = added(p), added(k), added(h)
            if None in (tp, th, ap, ah):
                verdict = "no data"
            else:
                why = []
                if not tp > th:
                    why.append(f"TPS ratio {tp:.2f} ≤ HAProxy's {th:.2f}")
                if not ap <= ah:
                    why.append(f"machine CPU added {ap:.1f} > HAProxy's {ah:.1f} ms")
                verdict = "met" if not why else "**not met**: " + "; ".join(why)
            verdicts.append((mode, c, verdict))
            mark = " †" if (mode, c) in short else ""
            md.append(f"| {c}{mark} | {fmt(d['tps'], 0)} | {fmt(p['tps'], 0)} ({fmt(tp)}) | {fmt(k['tps'], 0)} ({fmt(tk)}) | {fmt(h['tps'], 0)} ({fmt(th)}) | "
                      f"{fmt(d['lat'], 3)} | {fmt(lp)} | {fmt(lk)} | {fmt(lh)} | {fmt(p['proxy'])} | {fmt(k['proxy'])} | {fmt(h['proxy'])} | "
                      f"{fmt(ap)} | {fmt(ak)} | {fmt(ah)} | {verdict} |")
        md.append("")

    met = sum(v == "met" for _, _, v in verdicts)
    md += [f"Goal (the spliced router: a higher TPS ratio than HAProxy at every client count, and no more CPU per transaction "
           f"than HAProxy; the copy mode is shown beside them, with no goal of its own): met in {met} of {len(verdicts)} rows. CPU here is what the proxy adds to the whole machine: "
           "its busy time per 1,000 transactions minus direct's (medians), since a router that splices in the kernel "
           "does its work in softirq and kernel worker threads, outside its own process; its process CPU is shown "
           f"beside it. For reference, {ISSUE_HAPROXY}.", ""]

    # consistency: the ratios pass by pass (each pass's proxy run against the same pass's direct run)
    passes = sorted({r["pass"] for r in runs}, key=int)
    md += ["TPS ratios to direct pass by pass (each against the direct run of the same pass and group; "
           "– where a run is missing, disturbed or failed), and the spread of direct TPS over the passes:", "",
           "| mode | clients | pgrepl × direct, per pass | copy mode × direct, per pass | HAProxy × direct, per pass | pgrepl > HAProxy in | direct TPS min – max |",
           "|---|---:|---|---|---|---:|---:|"]
    for mode in modes:
        for c in clients:
            per = {}
            for ps in passes:
                tps = {r["target"]: num(r["tps"]) for r in runs if r["mode"] == mode and int(r["clients"]) == c and r["pass"] == ps}
                per[ps] = (ratio(tps.get("pgrepl"), tps.get("direct")), ratio(tps.get("haproxy"), tps.get("direct")),
                           ratio(tps.get("copy"), tps.get("direct")))
            both = [(p, h) for p, h, _ in per.values() if p is not None and h is not None]
            d_tps = [num(r["tps"]) for r in runs if r["mode"] == mode and int(r["clients"]) == c and r["target"] == "direct"]
            md.append(f"| {mode} | {c} | {', '.join(fmt(per[ps][0]) for ps in passes)} | {', '.join(fmt(per[ps][2]) for ps in passes)} | "
                      f"{', '.join(fmt(per[ps][1]) for ps in passes)} | "
                      f"{sum(p > h for p, h in both)} of {len(both)} | "
                      + (f"{min(d_tps):,.0f} – {max(d_tps):,.0f}" if d_tps else "–") + " |")
    md.append("")

    # where the CPU goes
    md += ["Where the CPU went (per 1,000 transactions, ms; medians). *busy*: share of the machine's "
           f"{machine['nproc']} CPUs not idle during the run; *PostgreSQL*: the primary's postmaster and all its "
           "processes; *replica*: the replica's (replaying the WAL); *rest*: busy time not accounted to these "
           "(pgrepl's agents and supervisor, kernel work outside these processes, anything else running on the "
           "machine); *softirq* is part of the machine's busy time, mostly loopback TCP; *steal*: time the "
           "hypervisor gave to other guests. Last column: the proxy's context switches (all its threads, voluntary "
           "and not) per transaction.", "",
           "| mode | clients | target | TPS | busy % | steal % | pgbench | PostgreSQL | proxy | replica | rest | softirq | proxy switches / tx |",
           "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for mode in modes:
        for c in clients:
            for t in TARGETS:
                x = cell(mode, c, t)
                md.append(f"| {mode} | {c} | {t} | {fmt(x['tps'], 0)} | {fmt(x['busy_pct'], 0)} | {fmt(x['steal_pct'], 1)} | "
                          f"{fmt(x['pgbench'])} | {fmt(x['primary'])} | {fmt(x['proxy'])} | {fmt(x['replica'])} | "
                          f"{fmt(x['rest'])} | {fmt(x['softirq'])} | {fmt(x['proxy_csw'])} |")
    idle_router = [r["cpu"]["router"] / r["cpu"]["wall"] * 1000 for r in runs
                   if r["target"] != "pgrepl" and r["cpu"] and r["cpu"]["router"] is not None and r["cpu"]["wall"]]
    idle_ha = [r["cpu"]["haproxy"] / r["cpu"]["wall"] * 1000 for r in runs
               if r["target"] != "haproxy" and r["cpu"] and r["cpu"]["haproxy"] is not None and r["cpu"]["wall"]]
    busy_router = [r["cpu"]["router"] / r["cpu"]["wall"] * 1000 for r in runs
                   if r["target"] == "pgrepl" and r["cpu"] and r["cpu"]["router"] is not None and r["cpu"]["wall"]]
    if idle_router or idle_ha:
        md += ["", f"Without traffic (during the other targets' runs) the router used {fmt(median(idle_router), 1)} ms of CPU "
               f"per second (median; max {fmt(max(idle_router) if idle_router else None, 1)}) and HAProxy "
               f"{fmt(median(idle_ha), 1)} (max {fmt(max(idle_ha) if idle_ha else None, 1)}); carrying the traffic the "
               f"router used {fmt(median(busy_router), 0)} ms per second (median of its runs). The proxy CPU figures "
               "include that background."]

    md += idle_section(out_dir)

    # every run
    md += ["", "<details><summary>Every run</summary>", "",
           "| run | pass | mode | clients | target | TPS | latency (ms) | transactions | proxy CPU (s) | proxy ms / 1000 tx | busy % | steal % | before: busy/steal %, waited (s) | ok |",
           "|---|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|:---:|"]
    for r in rows:
        cpu = r["cpu"]
        proxy_s = cpu[PROXY_OF[r["target"]]] if cpu and r["target"] in PROXY_OF else None
        busy = 100 * cpu["busy"] / cpu["capacity"] if cpu and cpu["capacity"] else None
        steal = 100 * cpu["steal"] / cpu["capacity"] if cpu and cpu["capacity"] else None
        md.append(f"| {r['seq']} | {r['pass']} | {r['mode']} | {r['clients']} | {r['target']} | {r['tps']} | {r['latency_ms']} | "
                  f"{r['txns']} | {fmt(proxy_s)} | {fmt(per_1000(proxy_s, r['txns_n']))} | {fmt(busy, 0)} | {fmt(steal, 1)} | {r.get('idle_before', '–')}, {r.get('idle_waited_s', '–')} | {r['ok']} |")
    md += ["", "</details>", "", END]

    publish("\n".join(md) + "\n", out_dir, doc, BEGIN, END, "## Router overhead: results")

if __name__ == "__main__":
    main()
