#!/usr/bin/env python3
"""CPU accounting for bench/router.sh, from /proc (python3 standard library only).

  procstat.py snapshot NAME=PID... [--tree NAME=PID]...
      Prints one JSON line: the wall clock, the machine's /proc/stat "cpu" line, and in clock
      ticks the utime+stime of each PID (fields 14 and 15 of /proc/PID/stat; all its threads)
      and, for each --tree PID (a postmaster), its own utime+stime+cutime+cstime plus the
      utime+stime of its live children. The difference of two tree figures is the CPU the
      server used in between, backends that exited meanwhile included (their time lands in the
      postmaster's cutime/cstime once reaped). Also, for each NAME=PID, the context switches
      (voluntary and not) of all its threads. A PID that is gone counts as null.
  procstat.py rusage OUT -- COMMAND...
      Runs COMMAND (stdin, stdout and stderr inherited; environment passed on), then writes the
      user+system CPU seconds of it and its children to OUT; exits with COMMAND's status.
"""

import json
import os
import resource
import subprocess
import sys
import time


def stat_fields(pid):
    """Fields 3 onward of /proc/PID/stat (the comm field, which may hold spaces, skipped)."""
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    return data[data.rindex(")") + 2:].split()


def own_ticks(pid):
    s = stat_fields(pid)
    return int(s[11]) + int(s[12])  # fields 14 utime, 15 stime


def tree_ticks(pid):
    s = stat_fields(pid)
    total = int(s[11]) + int(s[12]) + int(s[13]) + int(s[14])  # + 16 cutime, 17 cstime
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            c = stat_fields(entry)
            if int(c[1]) == pid:  # field 4: ppid
                total += int(c[11]) + int(c[12])
        except (OSError, ValueError, IndexError):
            continue  # exited while we looked
    return total


def context_switches(pid):
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                        total += int(line.split()[1])
        except OSError:
            continue  # a thread that ended while we looked
    return total


def machine():
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu "):
                names = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal", "guest", "guest_nice"]
                return dict(zip(names, map(int, line.split()[1:])))
    raise SystemExit("no cpu line in /proc/stat")


def guarded(f, pid):
    try:
        return f(int(pid))
    except (OSError, ValueError):
        return None


def snapshot(args):
    out = {"t": time.time(), "clk_tck": os.sysconf("SC_CLK_TCK"), "cpu": machine(), "pids": {}, "csw": {}, "trees": {}}
    tree = False
    for a in args:
        if a == "--tree":
            tree = True
            continue
        name, pid = a.split("=", 1)
        if tree:
            out["trees"][name] = guarded(tree_ticks, pid)
        else:
            out["pids"][name] = guarded(own_ticks, pid)
            out["csw"][name] = guarded(context_switches, pid)
        tree = False
    print(json.dumps(out, sort_keys=True))


def rusage(args):
    out, sep, cmd = args[0], args[1], args[2:]
    if sep != "--" or not cmd:
        raise SystemExit("usage: procstat.py rusage OUT -- COMMAND...")
    rc = subprocess.call(cmd)
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(out, "w") as f:
        f.write(f"{r.ru_utime + r.ru_stime:.3f}\n")
    sys.exit(rc)


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ("snapshot", "rusage"):
        raise SystemExit(__doc__)
    {"snapshot": snapshot, "rusage": rusage}[sys.argv[1]](sys.argv[2:])
