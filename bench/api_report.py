#!/usr/bin/env python3
"""Turns one run of bench/api.sh (a bench/results/<stamp>-api/ directory) into markdown: per path
the requests per second, latency and CPU per 1,000 requests of pgrepl's agent and of Patroni
(idle CPU over an equal interval subtracted), each agent's CPU% with HAProxy checking it every
second against without, and every run. Prints it, and with --doc FILE replaces the text between
the bench:api markers of FILE with it (appending a section when there are none).

Usage: python3 bench/api_report.py bench/results/<stamp>-api [--doc docs/benchmarks.md]
"""

import csv
import io
import json
import os
import re
import statistics

from report import machine_rows, num, parse_command_line, publish, read_tsv  # shared with the other benchmark reports

BEGIN = "<!-- bench:api:begin -->"
END = "<!-- bench:api:end -->"
SYSTEMS = ("pgrepl", "patroni")
GOAL_PCT = 1.0  # HAProxy's checks every second must cost an agent under 1% of a core
UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(x, digits=2):
    return "–" if x is None else f"{x:,.{digits}f}"


def load_json(path):
    with open(path) as f:
        return json.load(f)


def duration_ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(m.group(1)) * UNIT_MS[m.group(2)] if m else None


def parse_wrk(path):
    """requests, seconds, req/s, p50 and p99 (ms), non-2xx responses, socket errors (connect, write,
    timeout) and reads ended by the server closing the connection ("read" errors: wrk's count of
    the closes of a server that answers in HTTP/1.0, one connection per request) of a wrk run."""
    text = open(path, errors="replace").read()
    out = {"requests": None, "seconds": None, "rps": None, "p50": None, "p99": None, "non2xx": 0, "errors": 0, "closed": 0}
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", text)
    if m:
        out["requests"] = int(m.group(1))
        out["seconds"] = duration_ms(m.group(2) + m.group(3)) / 1000
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if m:
        out["rps"] = float(m.group(1))
    for pct, key in (("50", "p50"), ("99", "p99")):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", text, re.M)
        if m:
            out[key] = duration_ms(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        out["non2xx"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        connect, read, write, timeout = (int(g) for g in m.groups())
        out["errors"], out["closed"] = connect + write + timeout, read
    return out


def busy_pct(a, b):
    """The machine's busy time between two snapshots, in % of all its CPUs (steal counted as busy)."""
    d = {k: b["cpu"][k] - a["cpu"][k] for k in a["cpu"]}
    total = sum(v for k, v in d.items() if k not in ("guest", "guest_nice"))
    return None if total <= 0 else 100 * (total - d["idle"] - d["iowait"]) / total


def ticks(snap, kind, name):
    return snap[kind].get(name)


def net_cpu_s(idle0, idle1, load1, kind, name):
    """(CPU seconds of `name` during the load interval minus its idle CPU scaled to the same
    length, idle CPU as % of a core, CPU seconds during the load), or Nones."""
    a, b, c = (ticks(s, kind, name) for s in (idle0, idle1, load1))
    if None in (a, b, c):
        return None, None, None
    hz = idle0["clk_tck"]
    idle_s, load_s = (b - a) / hz, (c - b) / hz
    idle_len, load_len = idle1["t"] - idle0["t"], load1["t"] - idle1["t"]
    return load_s - idle_s * load_len / idle_len, 100 * idle_s / idle_len, load_s


def run_rows(out_dir):
    rows = []
    for r in read_tsv(os.path.join(out_dir, "runs.tsv")):
        pre = os.path.join(out_dir, r["prefix"])
        w = parse_wrk(pre + ".wrk.txt")
        idle0, idle1, load1 = (load_json(f"{pre}.{k}.json") for k in ("idle0", "idle1", "load1"))
        proc_net, proc_idle_pct, proc_load = net_cpu_s(idle0, idle1, load1, "pids", "proc")
        pg_net, pg_idle_pct, _ = net_cpu_s(idle0, idle1, load1, "trees", "pg")
        store_net, _, _ = net_cpu_s(idle0, idle1, load1, "pids", "store")
        try:
            wrk_cpu = float(open(pre + ".wrk-cpu").read())
        except (OSError, ValueError):
            wrk_cpu = None
        per_k = lambda s: None if s is None or not w["requests"] else s * 1000 / w["requests"] * 1000
        rows.append({**r, **w, "proc_ms_per_k": per_k(proc_net), "pg_ms_per_k": per_k(pg_net), "store_ms_per_k": per_k(store_net),
                     "proc_idle_pct": proc_idle_pct, "pg_idle_pct": pg_idle_pct,
                     "proc_load_pct": None if proc_load is None else 100 * proc_load / (load1["t"] - idle1["t"]),
                     "wrk_ms_per_k": per_k(wrk_cpu), "busy_idle_pct": busy_pct(idle0, idle1)})
    return rows


def report_wrk(out_dir, machine, rows):
    md = ["### Requests per second and CPU per 1,000 requests", "",
          f"`wrk {machine['wrk_args']}` from the same machine, medians over {machine['repeats']} passes. "
          "pgrepl: the primary's agent of a `pgrepl up --replicas 2` cluster; Patroni: a one-node cluster "
          "(its leader). CPU: utime+stime of the agent process / the patroni process (all threads) and, "
          "beside it, of that member's PostgreSQL (postmaster and children), during the run minus the same "
          "process's CPU over an equal idle interval just before it, per 1,000 requests served; for Patroni "
          "also etcd's (its answers read the store; pgrepl's agents answer from their loop's last view); idle: "
          "that interval's CPU in % of one core. Connection: keep-alive is wrk's default; Patroni's REST API "
          "answers in HTTP/1.0 and closes every connection after one reply, so for Patroni both rows are one "
          "connection per request.", "",
          "| GET | connection | system | req/s | p50 (ms) | p99 (ms) | CPU ms / 1,000 req | PostgreSQL's CPU ms / 1,000 req | "
          "etcd's CPU ms / 1,000 req | process idle (% of a core) | process under load (% of a core) | wrk's CPU ms / 1,000 req | "
          "non-2xx / socket errors / closed by the server |",
          "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    keys = []
    for r in rows:
        k = (r["path"], r["connection"])
        if k not in keys:
            keys.append(k)
    for path, conn in keys:
        for s in SYSTEMS:
            rs = [r for r in rows if (r["path"], r["connection"], r["system"]) == (path, conn, s)]
            if not rs:
                continue
            col = lambda k: median([r[k] for r in rs])
            bad = f"{sum(r['non2xx'] for r in rs)} / {sum(r['errors'] for r in rs)} / {sum(r['closed'] for r in rs)}"
            md.append(f"| `{path}` | {conn} | {s} | **{fmt(col('rps'), 0)}** | {fmt(col('p50'), 3)} | {fmt(col('p99'), 3)} | "
                      f"**{fmt(col('proc_ms_per_k'), 1)}** | {fmt(col('pg_ms_per_k'), 1)} | {fmt(col('store_ms_per_k'), 1)} | {fmt(col('proc_idle_pct'), 2)} | "
                      f"{fmt(col('proc_load_pct'), 0)} | {fmt(col('wrk_ms_per_k'), 1)} | {bad} |")
    skipped = [p for p in read_tsv(os.path.join(out_dir, "paths.tsv")) if p["code"] != "200"]
    if skipped:
        md += ["", "Not measured: " + "; ".join(f"{p['system']} answers `GET {p['path']}` with {p['code']}" for p in skipped)
               + " (a system is measured only on paths it answers with 200)."]
    return md


def haproxy_checks(path):
    """(listen, server, status, last check) rows of a `show stat` dump."""
    text = open(path).read().lstrip("# ")
    rows = list(csv.reader(io.StringIO(text)))
    head, out = rows[0], []
    for r in rows[1:]:
        if len(r) != len(head):
            continue
        d = dict(zip(head, r))
        if d["svname"] in ("FRONTEND", "BACKEND"):
            continue
        out.append((d["pxname"], d["svname"], d["status"], f"{d.get('check_status', '')} {d.get('check_code', '')}".strip(),
                    d.get("chkfail", ""), d.get("check_duration", "")))
    return out


def report_haproxy(out_dir, machine):
    path = os.path.join(out_dir, "haproxy.tsv")
    if not os.path.exists(path):
        return []
    phases = read_tsv(path)
    members = list(csv.reader(open(os.path.join(out_dir, "members.tsv")), delimiter="\t"))
    cpu = {}  # (phase, member, kind) -> % of a core
    for p in phases:
        a, b = load_json(os.path.join(out_dir, p["snap0"])), load_json(os.path.join(out_dir, p["snap1"]))
        length = b["t"] - a["t"]
        for m in members:
            for kind in ("pids", "trees"):
                x, y = a[kind].get(m[0]), b[kind].get(m[0])
                cpu[(p["phase"], m[0], kind)] = None if None in (x, y) else 100 * (y - x) / a["clk_tck"] / length
    names = [p["phase"] for p in phases]
    without = [n for n in names if n.startswith("without")]
    md = ["### HAProxy checking every second", "",
          f"Debian's HAProxy with Patroni's recipe (`haproxy.cfg` in the raw results): a `listen` section with "
          "`option httpchk OPTIONS /primary`, one with `OPTIONS /replica`, `http-check expect status 200`, "
          f"`default-server inter 1s fall 3 rise 2`, the 3 members as servers with `check port <its API port>`: "
          "2 checks a second on each agent, a new TCP connection each. Each agent's CPU (utime+stime of its "
          f"process, from /proc) in % of one core over {machine['haproxy_seconds']} s without HAProxy, as long with it, "
          "and as long without again; Patroni and etcd stopped by then.", "",
          "| member | role | " + " | ".join(f"{n} (% of a core)" for n in names) + " | with − mean(without) | CPU ms per check (2 a second) | goal < 1% |",
          "|---|---|" + "---:|" * len(names) + "---:|---:|:---:|"]
    for m in members:
        vals = [cpu[(n, m[0], "pids")] for n in names]
        base = [cpu[(n, m[0], "pids")] for n in without]
        w = cpu.get(("with", m[0], "pids"))
        diff = None if w is None or None in base or not base else w - sum(base) / len(base)
        verdict = "–" if w is None else ("met" if w < GOAL_PCT else "**not met**")
        md.append(f"| {m[0]} | {m[1]} | " + " | ".join(fmt(v, 3) for v in vals) + f" | **{fmt(diff, 3)}** | {fmt(None if diff is None else diff * 10 / 2, 2)} | {verdict} |")
    md += ["", "The same for each member's PostgreSQL (postmaster and children), which the checks should not touch:", "",
           "| member | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for m in members:
        md.append(f"| {m[0]} | " + " | ".join(fmt(cpu[(n, m[0], "trees")], 3) for n in names) + " |")
    busy = {p["phase"]: busy_pct(load_json(os.path.join(out_dir, p["snap0"])), load_json(os.path.join(out_dir, p["snap1"]))) for p in phases}
    md += ["", "| phase | 1-min load at start | machine busy (% of all CPUs) |", "|---|---:|---:|"] + [
        f"| {p['phase']} | {p['load']} | {fmt(busy[p['phase']], 0)} |" for p in phases]
    end = os.path.join(out_dir, "haproxy-stat-end.csv")
    if os.path.exists(end):
        md += ["", "HAProxy's view at the end of the minute with it (`show stat`):", "",
               "| listen | server | status | last check | failed checks | check duration (ms) |", "|---|---|---|---|---:|---:|"]
        md += [f"| {a} | {b} | {c} | {d} | {e} | {f} |" for a, b, c, d, e, f in haproxy_checks(end)]
    return md


def report_runs(rows):
    md = ["Every run:", "",
          "| GET | connection | system | pass | 1-min load | machine busy in the idle interval (% of all CPUs) | requests | req/s | p50 (ms) | p99 (ms) | "
          "CPU ms / 1,000 | PostgreSQL ms / 1,000 | idle % |",
          "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        md.append(f"| `{r['path']}` | {r['connection']} | {r['system']} | {r['repeat']} | {r['load']} | {fmt(r['busy_idle_pct'], 0)} | {r['requests']} | "
                  f"{fmt(r['rps'], 0)} | {fmt(r['p50'], 3)} | {fmt(r['p99'], 3)} | {fmt(r['proc_ms_per_k'], 1)} | "
                  f"{fmt(r['pg_ms_per_k'], 1)} | {fmt(r['proc_idle_pct'], 2)} |")
    return md


def main():
    out_dir, doc, machine = parse_command_line()
    rows = run_rows(out_dir)
    loads = [num(p["load"]) for p in read_tsv(os.path.join(out_dir, "passes.tsv"))] + [num(p["load"]) for p in (read_tsv(os.path.join(out_dir, "haproxy.tsv"))
                                                                         if os.path.exists(os.path.join(out_dir, "haproxy.tsv")) else [])]
    loads = [x for x in loads if x is not None]
    md = [BEGIN, "",
          f"Run of {machine['date_utc']} with `bash bench/api.sh`; raw results in `bench/results/{os.path.basename(out_dir)}/` "
          "(not committed).", "",
          "| machine | |", "|---|---|",
          *machine_rows(machine),
          f"| PostgreSQL | {machine['postgres']} |",
          f"| pgrepl | commit {machine['pgrepl_commit']}, release binary {machine['pgrepl_binary']} |",
          f"| Patroni | {machine['patroni']}, one node, DCS settings `{machine.get('patroni_dcs_config', '?')}` |",
          f"| etcd, HAProxy, wrk | {machine['etcd']}; {machine['haproxy']}; {machine['wrk']} |",
          f"| 1/5/15-min load when the run started | {machine['load_at_start']} |",
          f"| 1-min load at the start of each pass of wrk runs and each HAProxy phase | {fmt(min(loads), 2) if loads else '–'} to {fmt(max(loads), 2) if loads else '–'} "
          f"(median {fmt(median(loads), 2)}) |",
          ""]
    md += report_wrk(out_dir, machine, rows) + [""]
    md += report_haproxy(out_dir, machine) + [""]
    md += report_runs(rows) + ["", END]
    publish("\n".join(md) + "\n", out_dir, doc, BEGIN, END, "## HTTP API cost")


if __name__ == "__main__":
    main()
