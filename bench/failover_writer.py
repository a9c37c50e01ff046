#!/usr/bin/python3
"""The writer, the fault clock and the checker of bench/failover.sh.

Run with Debian's /usr/bin/python3, which has python3-psycopg2 (a pyenv or venv python3 first on
PATH usually has not). Every time is time.monotonic() (CLOCK_MONOTONIC, shared by all processes
of the machine), so the writer's log, the driver's fault stamps and the kill line up; wall-clock
times are logged beside them for reading only.

  write   --log FILE DSN     insert ids 1, 2, 3, ... into bench_failover, one per autocommit
                             transaction, one every --interval-ms; on an error reconnect and retry
                             the same id until it is acknowledged. Stops on SIGTERM/SIGINT.
  stamp   --events FILE LABEL
                             append "LABEL <monotonic> <wall>" to FILE (the driver's clock).
  kill    --events FILE [--label kill] PID... [--children-of PID]...
                             SIGKILL every PID (in the order given) and every child of each
                             --children-of PID, all within some microseconds; stamp LABEL_begin
                             before the first and LABEL (the fault instant) after the last.
  wait    --log FILE --events FILE --timeout S [--after S]
                             wait until the writer acknowledged a write on a connection opened
                             after the fault (the window's end for a switchover), then S more
                             seconds; exit 0, or 1 after --timeout seconds without one.
  check   --log FILE --events FILE DSN [--tsv FILE --meta k=v ...]
                             read every id from the (new) primary and report: rows lost (acked
                             ids missing), time to first write after the fault, the write gap.

Writer log (TSV, one line per event): event, id, conn, mono, wall, detail, with event one of
  connected      a connection (number `conn`) was opened
  connect_error  opening one failed (no insert was sent)
  ack            the insert of `id` committed and was acknowledged on connection `conn`
  uncertain      the insert of `id` raised: it may or may not have committed
  dup            retrying an uncertain `id` hit a unique violation: it had been committed
                 (counted as acknowledged, at this time)
  dup_unexpected a unique violation for an id never tried before (should not happen)
  stop           the writer stopped

Why a fixed rate (default one insert every 10 ms, 100/s) rather than as fast as possible: on a
2-CPU machine an unpaced writer keeps about one CPU busy (itself plus its backend), which would
slow down the very processes whose failover is being timed (etcd, Patroni, pgrepl's agents) and
make the results depend on how fast the client is. 10 ms bounds the timing resolution (a write
gap is known to within one interval plus a connection set-up, a few ms on loopback), which is far
below the seconds being measured, and yields a row every 10 ms to count losses on.
"""

import argparse
import json
import os
import signal
import sys
import time

TABLE = "bench_failover"


def now():
    return time.monotonic(), time.time()


def clean(msg):
    return " ".join(str(msg).split())[:300]


# ---- write ------------------------------------------------------------------------------------

def cmd_write(a):
    import psycopg2
    import psycopg2.errors

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    interval = a.interval_ms / 1000.0
    log = open(a.log, "a", buffering=1)

    def emit(event, ident="", conn="", detail=""):
        m, w = now()
        log.write(f"{event}\t{ident}\t{conn}\t{m:.6f}\t{w:.6f}\t{clean(detail)}\n")

    def connect():
        c = psycopg2.connect(
            a.dsn,
            connect_timeout=a.connect_timeout,
            options=f"-c statement_timeout={a.statement_timeout_ms}",
            application_name="bench_failover",
            # a server that vanished without a reset must not hang the writer either
            keepalives=1, keepalives_idle=1, keepalives_interval=1, keepalives_count=2,
            tcp_user_timeout=a.statement_timeout_ms + 1000,
        )
        c.autocommit = True
        return c

    if a.fresh:
        # the cluster is healthy when the writer starts: fail loudly if it is not
        c = connect()
        with c.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {TABLE}")
            cur.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (id bigint PRIMARY KEY, t timestamptz DEFAULT now())")
        c.close()

    conn, nconn, ident, uncertain = None, 0, 1, False
    next_t = time.monotonic()
    while not stop:
        if conn is None:
            try:
                conn = connect()
                nconn += 1
                emit("connected", ident, nconn)
                with conn.cursor() as cur:  # not part of a.fresh: the table may be missing on a new cluster
                    cur.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (id bigint PRIMARY KEY, t timestamptz DEFAULT now())")
            except psycopg2.Error as e:
                if conn is not None:
                    emit("connect_error", ident, nconn, f"create table: {e}")
                    conn.close()
                    conn = None
                else:
                    emit("connect_error", ident, "", e)
                time.sleep(interval)
                continue
        try:
            with conn.cursor() as cur:
                cur.execute(f"INSERT INTO {TABLE} (id) VALUES (%s)", (ident,))
            emit("ack", ident, nconn)
            ident, uncertain = ident + 1, False
        except psycopg2.errors.UniqueViolation as e:
            # only a writable primary gets this far: the row is there, so it had been committed
            emit("dup" if uncertain else "dup_unexpected", ident, nconn, e)
            ident, uncertain = ident + 1, False
        except psycopg2.Error as e:
            emit("uncertain", ident, nconn, f"{type(e).__name__}: {e}")
            uncertain = True
            try:
                conn.close()
            except psycopg2.Error:
                pass
            conn = None
            time.sleep(interval)
            next_t = time.monotonic()
            continue
        next_t += interval
        delay = next_t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            next_t = time.monotonic()
    emit("stop", ident, nconn)
    if conn is not None:
        conn.close()


# ---- the driver's clock -----------------------------------------------------------------------

def stamp(path, label):
    m, w = now()
    with open(path, "a") as f:
        f.write(f"{label}\t{m:.6f}\t{w:.6f}\n")


def cmd_stamp(a):
    stamp(a.events, a.label)


def children(ppid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
        except OSError:
            continue
        # the command name (field 2) may hold spaces: fields after the last ')'
        fields = st[st.rindex(")") + 2:].split()
        if int(fields[1]) == ppid:
            out.append(int(d))
    return out


def cmd_kill(a):
    pids = list(a.pids)
    for p in a.children_of or []:
        pids.extend(children(p))
    begin = now()
    killed = []
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
            killed.append(p)
        except ProcessLookupError:
            pass
    # the fault instant: every SIGKILL has been sent (usually some 50 µs after the first)
    end = now()
    with open(a.events, "a") as f:
        f.write(f"{a.label}_begin\t{begin[0]:.6f}\t{begin[1]:.6f}\n")
        f.write(f"{a.label}\t{end[0]:.6f}\t{end[1]:.6f}\n")
    print(" ".join(map(str, killed)))


# ---- reading the log --------------------------------------------------------------------------

def read_events(path):
    ev = {}
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 2:
                ev.setdefault(parts[0], float(parts[1]))
    return ev


def fault_window(ev):
    """(start, end) of the fault: the kill instant, or the switchover command's run."""
    if "kill" in ev:
        return ev["kill"], ev["kill"]
    if "switchover_start" in ev:
        return ev["switchover_start"], ev.get("switchover_end", ev["switchover_start"])
    raise SystemExit("no fault in the events file")


def read_log(path):
    rows = []
    with open(path) as f:
        for line in f:
            p = line.rstrip("\n").split("\t")
            if len(p) < 5 or not p[3]:
                continue
            rows.append({"event": p[0], "id": int(p[1]) if p[1] else None, "conn": int(p[2]) if p[2] else None,
                         "t": float(p[3]), "wall": float(p[4]), "detail": p[5] if len(p) > 5 else ""})
    return rows


def analyse(rows, f0, f1, new_connection=True):
    conn_opened = {r["conn"]: r["t"] for r in rows if r["event"] == "connected"}
    acks = [r for r in rows if r["event"] in ("ack", "dup")]
    # first write after the fault: the first acknowledgement after it, for a kill on a connection
    # opened after it (a reply already on its way from the old primary when it was killed does not
    # count); for a switchover, the first after the command returned
    first_after = next((r for r in acks if r["event"] == "ack" and r["t"] > f1
                        and (not new_connection or conn_opened.get(r["conn"], -1) > f0)), None)
    last_before = max((r["t"] for r in acks if r["t"] <= f0), default=None)
    # write gap: the longest interval between consecutive acknowledgements from the fault up to
    # the first write after it (so a reply from the old primary that arrived just after the kill
    # does not hide the outage); none (unbounded) when writes did not come back
    gap, gap_from, gap_to = None, None, None
    times = sorted(r["t"] for r in acks)
    for x, y in zip(times, times[1:]):
        if first_after is not None and y >= f0 and x < first_after["t"] and (gap is None or y - x > gap):
            gap, gap_from, gap_to = y - x, x, y
    return {
        "acks": acks,
        "first_after": first_after,
        "ttfw_s": None if first_after is None else first_after["t"] - f0,
        "last_ack_before_s": None if last_before is None else f0 - last_before,
        "gap_s": gap,
        "gap_from_s": None if gap_from is None else gap_from - f0,
        "gap_to_s": None if gap_to is None else gap_to - f0,
    }


def cmd_wait(a):
    ev = read_events(a.events)
    f0, f1 = fault_window(ev)
    deadline = f0 + a.timeout
    while True:
        res = analyse(read_log(a.log), f0, f1, "kill" in ev)
        if res["first_after"] is not None:
            time.sleep(a.after)
            print(f"{res['ttfw_s']:.3f}")
            return 0
        if time.monotonic() > max(deadline, f1 + 1):
            print("timeout")
            return 1
        time.sleep(0.1)


# ---- check ------------------------------------------------------------------------------------

COLUMNS = ["system", "config", "kind", "trial", "fault_wall", "old_primary", "new_primary", "failover",
           "ttfw_s", "gap_s", "gap_from_s", "gap_to_s", "cmd_s", "cmd_rc", "acked", "uncertain", "lost",
           "lost_ids", "present_unacked", "reconnects", "connect_errors", "promoted_s", "rejoin_s", "converged", "load", "load_waited_s", "note"]


def cmd_check(a):
    import psycopg2

    ev = read_events(a.events)
    f0, f1 = fault_window(ev)
    rows = read_log(a.log)
    res = analyse(rows, f0, f1, "kill" in ev)
    acked = {r["id"] for r in res["acks"]}
    uncertain = {r["id"] for r in rows if r["event"] == "uncertain"}
    present, err = None, None
    deadline = time.monotonic() + a.wait
    while present is None:
        try:
            c = psycopg2.connect(a.dsn, connect_timeout=2)
            with c.cursor() as cur:
                cur.execute(f"SELECT id FROM {TABLE}")
                present = {r[0] for r in cur.fetchall()}
            c.close()
        except psycopg2.Error as e:
            err = clean(e)
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
    out = {
        "acked": len(acked),
        "uncertain": len(uncertain),
        "ttfw_s": res["ttfw_s"],
        "gap_s": res["gap_s"],
        "gap_from_s": res["gap_from_s"],
        "gap_to_s": res["gap_to_s"],
        "last_ack_before_s": res["last_ack_before_s"],
        "reconnects": sum(r["event"] == "connected" for r in rows) - 1,
        "connect_errors": sum(r["event"] == "connect_error" for r in rows),
        "dup_unexpected": sum(r["event"] == "dup_unexpected" for r in rows),
        "errors": sorted({r["detail"].split(":")[0] for r in rows if r["event"] == "uncertain"}),
    }
    if "switchover_end" in ev:
        out["cmd_s"] = ev["switchover_end"] - ev["switchover_start"]
    if present is None:
        out.update(lost=None, lost_ids=None, present_unacked=None, read_error=err)
    else:
        lost = sorted(acked - present)
        out.update(lost=len(lost), lost_ids=lost[:20], present_unacked=sorted(present - acked)[:20])
    print(json.dumps(out))
    if a.tsv:
        meta = dict(kv.split("=", 1) for kv in a.meta or [])
        fmt = lambda x: "-" if x is None else (f"{x:.3f}" if isinstance(x, float) else str(x))
        row = dict(meta)
        row.update({
            "failover": meta.get("failover", "yes" if res["first_after"] is not None else "no"),
            "ttfw_s": fmt(out["ttfw_s"]), "gap_s": fmt(out["gap_s"]),
            "gap_from_s": fmt(out["gap_from_s"]), "gap_to_s": fmt(out["gap_to_s"]),
            "cmd_s": fmt(out.get("cmd_s")), "acked": fmt(out["acked"]), "uncertain": fmt(out["uncertain"]),
            "lost": fmt(out["lost"]),
            "lost_ids": ",".join(map(str, out["lost_ids"])) if out.get("lost_ids") else "-",
            "present_unacked": ",".join(map(str, out["present_unacked"])) if out.get("present_unacked") else "-",
            "reconnects": fmt(out["reconnects"]), "connect_errors": fmt(out["connect_errors"]),
        })
        if out.get("read_error"):
            row["note"] = (row.get("note", "") + " could not read the table: " + out["read_error"]).strip()
        new = not os.path.exists(a.tsv) or os.path.getsize(a.tsv) == 0
        with open(a.tsv, "a") as f:
            if new:
                f.write("\t".join(COLUMNS) + "\n")
            f.write("\t".join(clean(row.get(k, "-")) or "-" for k in COLUMNS) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write")
    w.add_argument("--log", required=True)
    w.add_argument("--interval-ms", type=float, default=10)
    w.add_argument("--connect-timeout", type=int, default=1)
    w.add_argument("--statement-timeout-ms", type=int, default=1000)
    w.add_argument("--fresh", action="store_true", help="drop and create the table first")
    w.add_argument("dsn", help="libpq conninfo of the read-write endpoint (password: PGPASSWORD)")
    s = sub.add_parser("stamp")
    s.add_argument("--events", required=True)
    s.add_argument("label")
    k = sub.add_parser("kill")
    k.add_argument("--events", required=True)
    k.add_argument("--label", default="kill")
    k.add_argument("--children-of", type=int, action="append")
    k.add_argument("pids", type=int, nargs="*")
    t = sub.add_parser("wait")
    t.add_argument("--log", required=True)
    t.add_argument("--events", required=True)
    t.add_argument("--timeout", type=float, required=True)
    t.add_argument("--after", type=float, default=2)
    c = sub.add_parser("check")
    c.add_argument("--log", required=True)
    c.add_argument("--events", required=True)
    c.add_argument("--wait", type=float, default=30, help="seconds to keep trying to read the table")
    c.add_argument("--tsv")
    c.add_argument("--meta", action="append")
    c.add_argument("dsn")
    a = ap.parse_args()
    return {"write": cmd_write, "stamp": cmd_stamp, "kill": cmd_kill, "wait": cmd_wait, "check": cmd_check}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main() or 0)
