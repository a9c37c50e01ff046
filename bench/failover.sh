#!/usr/bin/env bash
# Failover benchmark (see docs/benchmarks.md, "Failover"): pgrepl against Patroni 3 in one run.
#
# For each system, a 3-member cluster (a primary and 2 streaming replicas) behind its read-write
# endpoint, with bench/failover_writer.py inserting one row every 10 ms through that endpoint:
#   - unplanned failover, BENCH_FAILOVER_TRIALS times: kill -9 of the primary's member (its agent
#     and its PostgreSQL: postmaster and all its processes at once); measured: time from the kill
#     to the first acknowledged write on a new connection, the write gap, rows lost (acknowledged
#     ids missing on the new primary), with a timeout;
#   - planned switchover, BENCH_FAILOVER_SWITCHOVERS times: the write gap around the command.
# After every trial the killed member is started again and the script waits until the cluster has
# converged (one primary, 2 streaming replicas, the endpoint routing to the primary) before the next.
#
# Systems (BENCH_FAILOVER_SYSTEMS, in this order by default):
#   pgrepl            `pgrepl up --replicas 2`, rw endpoint = pgrepl's router. The supervisor would
#                     restart a killed agent in place, so the fault also kills the supervisor (first),
#                     then the primary's agent and PostgreSQL; the member is brought back by
#                     `pgrepl up` (a new supervisor that adopts the running members).
#   pgrepl-sync       the same with `synchronous = on` (PGREPL_SYNCHRONOUS=on): no acknowledged row
#                     may be lost.
#   patroni-defaults  Debian's patroni with ttl 30, loop_wait 10, retry_timeout 10 (its defaults);
#   patroni-tuned     the same with ttl 10, loop_wait 1, retry_timeout 4.
#                     Both: one local etcd (Debian's etcd-server, v3 API, as the postgres user),
#                     three Patroni nodes (PostgreSQL 15, as the postgres user), HAProxy in tcp
#                     mode with `option httpchk GET /primary` and `inter 3s fall 3 rise 2
#                     on-marked-down shutdown-sessions` (Patroni's documented settings); fault =
#                     kill -9 of the primary's patroni and PostgreSQL; switchover = patronictl
#                     switchover --force; the killed node is brought back by starting its patroni.
#
# Raw results go to bench/results/<UTC stamp>-failover/ (trials.tsv: one row per trial, plus per
# trial the writer's log, the fault stamps and command outputs, and the members' logs); the
# summary (bench/failover_report.py) is printed, and with BENCH_PUBLISH=1 written into
# docs/benchmarks.md between the bench:failover markers (under a "Failover" heading).
#
# Usage (as root, like pgrepl's other commands on this machine):  bash bench/failover.sh
#   (PGREPL_BENCH=1 bash scripts/setup.sh installs haproxy, patroni, etcd-server, python3-psycopg2)
# Knobs (environment):
#   BENCH_FAILOVER_TRIALS=5          unplanned failovers per system
#   BENCH_FAILOVER_SWITCHOVERS=3     planned switchovers per system
#   BENCH_FAILOVER_SYSTEMS="pgrepl pgrepl-sync patroni-defaults patroni-tuned"
#   BENCH_FAILOVER_TIMEOUT=60        seconds after the fault without a write = "no failover"
#   BENCH_FAILOVER_INTERVAL_MS=10    the writer's pace (see bench/failover_writer.py for why)
#   BENCH_FAILOVER_WARMUP=3          seconds of writes before the fault
#   BENCH_FAILOVER_AFTER=2           seconds of writes kept after the first write after the fault
#   BENCH_FAILOVER_CONVERGE_TIMEOUT=180  seconds to wait for the cluster to converge between trials
#   BENCH_PGREPL_SWITCHOVER="switchover --to %s"  pgrepl's planned-switchover command (arguments
#                                    after `pgrepl --dir DIR`; %s = the replica to hand over to);
#                                    default: that, or "promote %s" when the binary has no switchover
#   BENCH_LOAD_MAX=1.0 BENCH_LOAD_WAIT=30  before each trial, wait until the 1-minute load average
#                                    is below this, for at most this many seconds (recorded)
#   BENCH_PUBLISH=0                  1: write the summary into docs/benchmarks.md
#   BENCH_BUILD=1                    0: use target/release/pgrepl as it is
#   BENCH_PYTHON=/usr/bin/python3    a python3 with psycopg2 (Debian's python3-psycopg2)
#   PG_BIN=/usr/lib/postgresql/15/bin HAPROXY=/usr/sbin/haproxy ETCD=/usr/bin/etcd
#   PATRONI=/usr/bin/patroni PATRONICTL=/usr/bin/patronictl
# Passwords (pgrepl's from its secrets.json, Patroni's generated per run into its 0600 config
# files) reach the client processes through their environment only, never a command line.
# Never uses port 5432 or 5433 nor Debian's main cluster; everything it starts is stopped on exit,
# failure or Ctrl-C.
set -euo pipefail

# The planned switchover of pgrepl: arguments after `pgrepl --dir DIR`; %s is the candidate.
# Unset: `switchover --to %s` when the binary has that command, else `promote %s` (older builds).
PGREPL_SWITCHOVER=${BENCH_PGREPL_SWITCHOVER:-}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PGREPL=$ROOT/target/release/pgrepl
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PY=${BENCH_PYTHON:-/usr/bin/python3}
HAPROXY=${HAPROXY:-/usr/sbin/haproxy}
ETCD=${ETCD:-/usr/bin/etcd}
PATRONI=${PATRONI:-/usr/bin/patroni}
PATRONICTL=${PATRONICTL:-/usr/bin/patronictl}
TRIALS=${BENCH_FAILOVER_TRIALS:-5}
SWITCHOVERS=${BENCH_FAILOVER_SWITCHOVERS:-3}
SYSTEMS=${BENCH_FAILOVER_SYSTEMS:-pgrepl pgrepl-sync patroni-defaults patroni-tuned}
TIMEOUT=${BENCH_FAILOVER_TIMEOUT:-60}
INTERVAL_MS=${BENCH_FAILOVER_INTERVAL_MS:-10}
WARMUP=${BENCH_FAILOVER_WARMUP:-3}
AFTER=${BENCH_FAILOVER_AFTER:-2}
CONVERGE_TIMEOUT=${BENCH_FAILOVER_CONVERGE_TIMEOUT:-180}
LOAD_MAX=${BENCH_LOAD_MAX:-1.0}
LOAD_WAIT=${BENCH_LOAD_WAIT:-30}
PUBLISH=${BENCH_PUBLISH:-0}
WRITER=$ROOT/bench/failover_writer.py

# log writes to the script's own stderr, kept as fd 3, so that it also shows from the cleanup trap
# when that runs within a command whose stderr is redirected (the daemons are started with 3>&-)
exec 3>&2
log() { printf '[bench-failover %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&3; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (pgrepl switches to the postgres OS user itself; Patroni and etcd are started as postgres)"
id postgres >/dev/null 2>&1 || die "no OS user postgres (run scripts/setup.sh)"
for b in psql postgres pg_ctl; do [ -x "$PG_BIN/$b" ] || die "$PG_BIN/$b not found (set PG_BIN)"; done
"$PY" -c 'import psycopg2' 2>/dev/null || die "$PY has no psycopg2 (PGREPL_BENCH=1 bash scripts/setup.sh installs python3-psycopg2; set BENCH_PYTHON)"
for s in $SYSTEMS; do
  case $s in
    pgrepl|pgrepl-sync) ;;
    patroni-defaults|patroni-tuned)
      for b in "$HAPROXY" "$ETCD" "$PATRONI" "$PATRONICTL"; do
        [ -x "$b" ] || die "$b not found (PGREPL_BENCH=1 bash scripts/setup.sh installs haproxy, etcd-server and patroni)"
      done ;;
    *) die "unknown system $s in BENCH_FAILOVER_SYSTEMS (pgrepl, pgrepl-sync, patroni-defaults, patroni-tuned)" ;;
  esac
done
if [[ " $SYSTEMS " == *" pgrepl"* ]] && { [ "${BENCH_BUILD:-1}" = 1 ] || [ ! -x "$PGREPL" ]; }; then
  log "building pgrepl (release)"
  (cd "$ROOT" && cargo build --release --bin pgrepl --quiet) || die "cargo build failed"
fi

if [[ " $SYSTEMS " == *" pgrepl"* ]] && [ -z "$PGREPL_SWITCHOVER" ]; then
  if "$PGREPL" switchover --help >/dev/null 2>&1; then PGREPL_SWITCHOVER="switchover --to %s"; else PGREPL_SWITCHOVER="promote %s"; fi
fi

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$ROOT/bench/results/$STAMP-failover
mkdir -p "$OUT"
# Cluster directories live here: reachable by the postgres user, short enough for unix sockets.
WORK=$(mktemp -d /tmp/pgrepl-bench-failover.XXXXXX)
chown postgres:postgres "$WORK"
chmod 0755 "$WORK"
TSV=$OUT/trials.tsv
log "raw results: $OUT; scratch: $WORK"

# ---- state, and cleanup (also on failure or interrupt) --------------------------------------------
PD=$WORK/pgrepl          # pgrepl's cluster directory
WRITER_PID=
ETCD_PID=
HAPROXY_PID=
PAT_DIR=                 # the current Patroni cluster's directory
declare -A PAT_PID=()    # Patroni node name -> pid of its patroni process

stop_writer() { stop_pid "$WRITER_PID" 10; WRITER_PID=; }
stop_haproxy() { stop_pid "$HAPROXY_PID" 5; HAPROXY_PID=; }

# Stops the current Patroni cluster: every patroni (which stops its PostgreSQL), then any
# PostgreSQL left behind (a killed node's), immediately.
stop_patroni() {
  local n d
  for n in "${!PAT_PID[@]}"; do kill -TERM "${PAT_PID[$n]}" 2>/dev/null || true; done
  for n in "${!PAT_PID[@]}"; do stop_pid "${PAT_PID[$n]}" 60; done
  PAT_PID=()
  [ -n "$PAT_DIR" ] || return 0
  for d in "$PAT_DIR"/node*/data; do
    [ -f "$d/postmaster.pid" ] || continue
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$d" status >/dev/null 2>&1 || continue
    log "stopping PostgreSQL left in $d"
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$d" stop -m immediate -w -t 30 >/dev/null 2>&1 || true
  done
}

# now, wait_for_quiet, destroy_cluster, free_ports, is_proc, start_etcd, secret, gen_password,
# stop_pid: shared with the other benchmark scripts.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cleanup() {
  local rc=$? keep=0
  trap - EXIT INT TERM
  stop_writer
  stop_haproxy
  if [ -n "${PAT_DIR}" ] || [ "${#PAT_PID[@]}" -gt 0 ]; then log "cleanup: stopping Patroni"; stop_patroni; fi
  if [ -n "$ETCD_PID" ]; then log "cleanup: stopping etcd"; stop_pid "$ETCD_PID" 10; fi
  if [ -e "$PD/pgrepl.toml" ]; then destroy_cluster "$PD" || keep=1; fi
  if [ "$keep" -eq 0 ]; then rm -rf "$WORK"; fi
  [ "$rc" -eq 0 ] || log "failed (exit $rc); partial raw results in $OUT"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- helpers ----------------------------------------------------------------------------------


# log_offsets FILE WALL PATTERN...: for each PATTERN, the seconds after WALL (epoch) of the first
# line of FILE at or after WALL that contains it ("-" when none), joined by "/". Understands the
# timestamps of pgrepl's agent (2026-11-22T02:20:52.058389Z), Patroni (2026-11-22 02:10:44,418,
# logged in UTC: Patroni runs with TZ=UTC) and PostgreSQL (2026-11-22 02:10:43.922 UTC).
log_offsets() {
  "$PY" - "$@" <<'EOF'
import datetime as dt, re, sys
path, t0, patterns = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
stamp = re.compile(r"^(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)[.,](\d+)")
found = {}
try:
    with open(path, errors="replace") as f:
        for line in f:
            todo = [p for p in patterns if p not in found and p in line]
            m = stamp.match(line) if todo else None
            if not m:
                continue
            t = dt.datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}.{m.group(3)[:6]:0<6}+00:00").timestamp()
            if t >= t0:
                for p in todo:
                    found[p] = f"{t - t0:.2f}"
except OSError:
    pass
print("/".join(found.get(p, "-") for p in patterns))
EOF
}

# elapsed T0: seconds since the `now` value T0.
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# wait_converged: up to CONVERGE_TIMEOUT seconds for "${SYS}_converged" to succeed.
wait_converged() {
  local start=$SECONDS
  until "${SYS}_converged" >/dev/null 2>&1; do
    (( SECONDS - start < CONVERGE_TIMEOUT )) || return 1
    sleep 1
  done
}

# ---- pgrepl -----------------------------------------------------------------------------------
pgrepl_status() { "$PGREPL" --dir "$PD" status --json 2>/dev/null; }

# pgrepl_primary: the running primary's name (fails when there is none).
pgrepl_primary() {
  pgrepl_status | "$PY" -c '
import json, sys
s = json.load(sys.stdin)
p = [m["name"] for m in s["members"] if m["role"] == "primary" and m["state"] == "running"]
if len(p) != 1:
    sys.exit(1)
print(p[0])'
}

# pgrepl_replicas: the streaming replicas' names, one a line.
pgrepl_replicas() {
  pgrepl_status | "$PY" -c '
import json, sys
for m in json.load(sys.stdin)["members"]:
    if m["role"] == "replica" and m["state"] == "streaming":
        print(m["name"])'
}

# pgrepl_converged: one running primary that the rw endpoint routes to, 2 streaming replicas
# (in the primary's pg_stat_replication too), the supervisor running.
pgrepl_converged() {
  local sup
  sup=$(cat "$PD/supervisor.pid" 2>/dev/null) && is_proc "$sup" pgrepl || return 1
  pgrepl_status | "$PY" -c '
import json, sys
s = json.load(sys.stdin)
m = s["members"]
p = [x["name"] for x in m if x["role"] == "primary" and x["state"] == "running"]
r = [x["name"] for x in m if x["role"] == "replica" and x["state"] == "streaming"]
repl = [x for x in s.get("replication", []) if x.get("state") == "streaming"]
ok = len(m) == 3 and len(p) == 1 and len(r) == 2 and len(repl) == 2 and s["endpoints"]["rw"]["routes_to"] == p
print(p[0] if ok else "not converged")
sys.exit(0 if ok else 1)'
}

pgrepl_setup() {
  local rw ro
  read -r rw ro <<<"$(free_ports 2)"
  log "pgrepl: starting a primary and 2 replicas; rw endpoint 127.0.0.1:$rw"
  PGREPL_SYNCHRONOUS=$PGREPL_SYNC "$PGREPL" --dir "$PD" up --replicas 2 --port "$rw" --ro-port "$ro" >"$OUT/pgrepl-up.out" 2>&1 3>&- \
    || die "pgrepl up failed; see $OUT/pgrepl-up.out"
  DSN="host=127.0.0.1 port=$rw user=postgres dbname=postgres"
  DB_PASSWORD=$(secret "$PD" admin)
  # the timing settings, from pgrepl.toml or pgrepl's defaults (README.md, Configuration)
  CONFIG_DESC=$("$PY" -c '
import sys, tomllib
c = tomllib.load(open(sys.argv[1], "rb"))
print(" ".join(f"{k}={c.get(k, d)}" for k, d in (("ttl", "4s"), ("loop_wait", "1s"), ("rw_wait", "5s"), ("synchronous", "off"))))' "$PD/pgrepl.toml")
  printf 'pgrepl_config\t%s\n' "$CONFIG_DESC" >>"$OUT/machine.tsv"
}

# pgrepl_kill NAME EVENTS: kill -9 the supervisor, then NAME's agent and its PostgreSQL (the
# postmaster and every process it started) together; the fault instant is stamped just before.
pgrepl_kill() {
  local name=$1 events=$2 sup agent pm
  sup=$(cat "$PD/supervisor.pid")
  agent=$(tr -dc '0-9' <"$PD/members/$name/agent.lock")
  pm=$(head -1 "$PD/members/$name/data/postmaster.pid")
  is_proc "$sup" pgrepl || die "supervisor pid $sup from $PD/supervisor.pid is not running pgrepl"
  is_proc "$agent" pgrepl || die "agent pid $agent of $name is not running pgrepl"
  is_proc "$pm" postgres || die "postmaster pid $pm of $name is not running postgres"
  "$PY" "$WRITER" kill --events "$events" --label supervisor_kill "$sup" >/dev/null
  "$PY" "$WRITER" kill --events "$events" "$agent" "$pm" --children-of "$pm"
}

# pgrepl_restore NAME: bring NAME back: `pgrepl up` starts a new supervisor, which adopts the
# running members and starts NAME's agent again.
pgrepl_restore() { timeout "$CONVERGE_TIMEOUT" "$PGREPL" --dir "$PD" up 3>&-; }

pgrepl_switchover() { # OLD CANDIDATE
  local args
  # shellcheck disable=SC2059
  args=$(printf "$PGREPL_SWITCHOVER" "$2")
  # shellcheck disable=SC2086
  "$PGREPL" --dir "$PD" $args
}

# pgrepl_promoted_at NAME WALL: seconds after WALL (epoch) at which NAME's agent logged that it
# took the leader lease, and that it promoted its PostgreSQL.
pgrepl_promoted_at() {
  log_offsets "$PD/members/$1/member.log" "$2" "took the leader lease" "promoted to primary"
}

pgrepl_save_logs() {
  mkdir -p "$OUT/pgrepl-logs"
  cp "$PD/supervisor.log" "$PD/router.log" "$OUT/pgrepl-logs/" 2>/dev/null || true
  for m in "$PD"/members/*/; do [ -f "$m/member.log" ] && cp "$m/member.log" "$OUT/pgrepl-logs/$(basename "$m").log"; done
  true
}

pgrepl_teardown() {
  pgrepl_save_logs
  log "pgrepl: destroying the cluster"
  "$PGREPL" --dir "$PD" down --destroy >/dev/null 2>>"$OUT/cleanup.err" || log "pgrepl down --destroy failed (see $OUT/cleanup.err)"
}

# ---- Patroni ----------------------------------------------------------------------------------
NODES=(node1 node2 node3)
declare -A PAT_REST=() PAT_PG=()

# patroni_write_config CONFIG NODE: the node's patroni.yml (mode 0600, owned by postgres).
patroni_write_config() {
  local cfg=$1 n=$2 ttl loop_wait retry_timeout d=$PAT_DIR/$2
  case $cfg in
    defaults) ttl=30 loop_wait=10 retry_timeout=10 ;; # Patroni's defaults, written out
    tuned) ttl=10 loop_wait=1 retry_timeout=4 ;;
  esac
  install -d -o postgres -g postgres -m 0700 "$d"
  cat >"$d/patroni.yml" <<EOF
scope: bench-$cfg
namespace: /service/
name: $n
log:
  level: INFO
restapi:
  listen: 127.0.0.1:${PAT_REST[$n]}
  connect_address: 127.0.0.1:${PAT_REST[$n]}
etcd3:
  hosts: 127.0.0.1:$ETCD_CLIENT
bootstrap:
  dcs:
    ttl: $ttl
    loop_wait: $loop_wait
    retry_timeout: $retry_timeout
    maximum_lag_on_failover: 1048576
    postgresql:
      use_pg_rewind: true
      use_slots: true
  initdb:
  - encoding: UTF8
  pg_hba:
  - local all all trust
  - host replication replicator 127.0.0.1/32 scram-sha-256
  - host all all 127.0.0.1/32 scram-sha-256
postgresql:
  listen: 127.0.0.1:${PAT_PG[$n]}
  connect_address: 127.0.0.1:${PAT_PG[$n]}
  data_dir: $d/data
  bin_dir: $PG_BIN
  pgpass: $d/pgpass
  authentication:
    superuser:
      username: postgres
      password: $DB_PASSWORD
    replication:
      username: replicator
      password: $REPL_PASSWORD
    rewind:
      username: rewind_user
      password: $REWIND_PASSWORD
  parameters:
    unix_socket_directories: $d
EOF
  chown postgres:postgres "$d/patroni.yml"
  chmod 0600 "$d/patroni.yml"
}

patroni_start() { # NODE
  local n=$1 d=$PAT_DIR/$1
  (cd "$d" && exec setpriv --reuid postgres --regid postgres --init-groups -- \
    env HOME="$d" TZ=UTC "$PATRONI" "$d/patroni.yml") >>"$d/patroni.log" 2>&1 3>&- &
  PAT_PID[$n]=$!
}

# patroni_cluster: GET /cluster from the first node whose REST API answers.
patroni_cluster() {
  local n
  for n in "${NODES[@]}"; do
    curl -fsS -m 2 "http://127.0.0.1:${PAT_REST[$n]}/cluster" 2>/dev/null && return 0
  done
  return 1
}

patroni_primary() {
  patroni_cluster | "$PY" -c '
import json, sys
p = [m["name"] for m in json.load(sys.stdin)["members"] if m["role"] in ("leader", "master", "primary") and m["state"] == "running"]
if len(p) != 1:
    sys.exit(1)
print(p[0])'
}

patroni_replicas() {
  patroni_cluster | "$PY" -c '
import json, sys
for m in json.load(sys.stdin)["members"]:
    if m["role"] in ("replica", "sync_standby") and m["state"] in ("running", "streaming"):
        print(m["name"])'
}

# haproxy_up: the names of the servers HAProxy has UP, from its stats socket.
haproxy_up() {
  "$PY" -c '
import csv, io, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"show stat\n")
data = b""
while True:
    b = s.recv(65536)
    if not b:
        break
    data += b
rows = list(csv.reader(io.StringIO(data.decode().lstrip("# "))))
h = rows[0]
for r in rows[1:]:
    if len(r) == len(h):
        d = dict(zip(h, r))
        if d["pxname"] == "pg_rw" and d["svname"] not in ("FRONTEND", "BACKEND") and d["status"].startswith("UP"):
            print(d["svname"])' "$PAT_DIR/haproxy.sock"
}

# patroni_converged: one leader, 2 running replicas with a known lag, 2 streaming in the leader's
# pg_stat_replication, and HAProxy sending connections to the leader only.
patroni_converged() {
  local leader streaming up
  leader=$(patroni_cluster | "$PY" -c '
import json, sys
m = json.load(sys.stdin)["members"]
p = [x["name"] for x in m if x["role"] in ("leader", "master", "primary") and x["state"] == "running"]
r = [x for x in m if x["role"] in ("replica", "sync_standby") and x["state"] in ("running", "streaming") and isinstance(x.get("lag"), int)]
if len(m) != 3 or len(p) != 1 or len(r) != 2:
    sys.exit(1)
print(p[0])') || return 1
  streaming=$(PGPASSWORD=$DB_PASSWORD "$PG_BIN/psql" -X -At -h 127.0.0.1 -p "${PAT_PG[$leader]}" -U postgres -d postgres \
    -c "select count(*) from pg_stat_replication where state = 'streaming'" 2>/dev/null) || return 1
  [ "$streaming" = 2 ] || return 1
  up=$(haproxy_up | tr '\n' ' ') || return 1
  [ "$up" = "$leader " ] || return 1
  echo "$leader"
}

patroni_setup() { # CONFIG
  local cfg=$1 n ports ha_port i=0
  [ -n "$ETCD_PID" ] || start_etcd
  PAT_DIR=$WORK/patroni-$cfg
  install -d -o postgres -g postgres -m 0755 "$PAT_DIR"
  DB_PASSWORD=$(gen_password)
  REPL_PASSWORD=$(gen_password)
  REWIND_PASSWORD=$(gen_password)
  read -r -a ports <<<"$(free_ports 7)"
  for n in "${NODES[@]}"; do
    PAT_REST[$n]=${ports[$i]}
    PAT_PG[$n]=${ports[$((i + 1))]}
    i=$((i + 2))
  done
  ha_port=${ports[6]}
  for n in "${NODES[@]}"; do patroni_write_config "$cfg" "$n"; done
  # node1 bootstraps; the others clone from it once it leads
  log "patroni ($cfg): starting node1 (bootstrap)"
  patroni_start node1
  for i in $(seq 1 120); do patroni_primary >/dev/null 2>&1 && break; sleep 0.5; done
  [ "$(patroni_primary 2>/dev/null)" = node1 ] || die "node1 did not become the leader; see $PAT_DIR/node1/patroni.log"
  log "patroni ($cfg): starting node2, node3"
  patroni_start node2
  patroni_start node3
  {
    echo "global"
    echo "    maxconn 100"
    echo "    stats socket $PAT_DIR/haproxy.sock mode 600 level admin"
    echo ""
    echo "defaults"
    echo "    mode tcp"
    echo "    retries 2"
    echo "    timeout client 30m"
    echo "    timeout connect 4s"
    echo "    timeout server 30m"
    echo "    timeout check 5s"
    echo ""
    echo "listen pg_rw"
    echo "    bind 127.0.0.1:$ha_port"
    echo "    option httpchk GET /primary"
    echo "    http-check expect status 200"
    echo "    default-server inter 3s fall 3 rise 2 on-marked-down shutdown-sessions"
    for n in "${NODES[@]}"; do
      echo "    server $n 127.0.0.1:${PAT_PG[$n]} maxconn 100 check port ${PAT_REST[$n]}"
    done
  } >"$PAT_DIR/haproxy.cfg"
  cp "$PAT_DIR/haproxy.cfg" "$OUT/haproxy-$cfg.cfg"
  "$HAPROXY" -c -q -f "$PAT_DIR/haproxy.cfg" || die "haproxy rejects $PAT_DIR/haproxy.cfg"
  "$HAPROXY" -f "$PAT_DIR/haproxy.cfg" -db >"$OUT/haproxy-$cfg.log" 2>&1 3>&- &
  HAPROXY_PID=$!
  sleep 0.5
  kill -0 "$HAPROXY_PID" 2>/dev/null || die "haproxy exited; see $OUT/haproxy-$cfg.log"
  DSN="host=127.0.0.1 port=$ha_port user=postgres dbname=postgres"
  SYS=patroni
  log "patroni ($cfg): waiting for node2 and node3 to stream and HAProxy (127.0.0.1:$ha_port) to route to node1"
  wait_converged || die "the Patroni cluster did not converge in ${CONVERGE_TIMEOUT}s; see $PAT_DIR/node*/patroni.log"
  local dyn
  dyn=$(curl -fsS "http://127.0.0.1:${PAT_REST[node1]}/config")
  printf 'patroni_%s_dcs_config\t%s\n' "$cfg" "$dyn" >>"$OUT/machine.tsv"
  CONFIG_DESC=$("$PY" -c 'import json, sys; c = json.loads(sys.argv[1]); print(" ".join(f"{k}={c.get(k)}" for k in ("ttl", "loop_wait", "retry_timeout")))' "$dyn")
  log "patroni ($cfg): converged ($CONFIG_DESC)"
}

# patroni_kill NAME EVENTS: kill -9 NAME's patroni and its PostgreSQL (the postmaster and every
# process it started) together; the fault instant is stamped just before.
patroni_kill() {
  local name=$1 events=$2 pid=${PAT_PID[$1]} pm
  pm=$(head -1 "$PAT_DIR/$name/data/postmaster.pid")
  is_proc "$pid" patroni || die "pid $pid of $name is not running patroni"
  is_proc "$pm" postgres || die "postmaster pid $pm of $name is not running postgres"
  "$PY" "$WRITER" kill --events "$events" "$pid" "$pm" --children-of "$pm"
  wait "$pid" 2>/dev/null || true
}

# patroni_restore NAME: start NAME's patroni again: it rewinds its PostgreSQL and follows the leader.
patroni_restore() { patroni_start "$1"; }

patroni_switchover() { # OLD CANDIDATE
  "$PATRONICTL" -c "$PAT_DIR/node1/patroni.yml" switchover --leader "$1" --candidate "$2" --force
}

# patroni_promoted_at NAME WALL: seconds after WALL (epoch) at which NAME's patroni logged that it
# took the leader lock, and at which its PostgreSQL finished promotion ("selected new timeline").
patroni_promoted_at() {
  log_offsets "$PAT_DIR/$1/patroni.log" "$2" "promoted self to leader" "selected new timeline ID"
}

patroni_teardown() {
  local cfg=$1 n
  log "patroni ($cfg): stopping HAProxy and the nodes"
  stop_haproxy
  stop_patroni
  mkdir -p "$OUT/patroni-$cfg-logs"
  for n in "${NODES[@]}"; do cp "$PAT_DIR/$n/patroni.log" "$OUT/patroni-$cfg-logs/$n.log" 2>/dev/null || true; done
  rm -rf "$PAT_DIR"
  PAT_DIR=
}

# ---- one trial --------------------------------------------------------------------------------
# trial KIND N: KIND is kill or switchover. Fails when the cluster does not converge afterwards.
trial() {
  local kind=$1 n=$2 t=$OUT/$LABEL-$1-$2 old new cand ttfw rc=0 cmd_rc=- t0 rejoin=- converged=yes note="" fault_wall promoted=-
  mkdir -p "$t"
  wait_for_quiet
  old=$("${SYS}_primary") || { log "no primary before the trial"; return 1; }
  log "$LABEL $kind $n: primary $old (load $LOAD, waited ${LOAD_WAITED}s)"
  PGPASSWORD=$DB_PASSWORD "$PY" "$WRITER" write --log "$t/writer.log" --interval-ms "$INTERVAL_MS" --fresh "$DSN" \
    2>"$t/writer.err" 3>&- &
  WRITER_PID=$!
  sleep "$WARMUP"
  grep -q '^ack' "$t/writer.log" 2>/dev/null || { log "the writer got no write through in ${WARMUP}s; see $t/writer.*"; stop_writer; return 1; }
  if [ "$kind" = kill ]; then
    "${SYS}_kill" "$old" "$t/events.tsv" >"$t/killed.txt"  # (not in a subshell: it may die or wait)
    log "  kill -9 of $old's member: $(wc -w <"$t/killed.txt") processes"
  else
    cand=$("${SYS}_replicas" | head -1)
    "$PY" "$WRITER" stamp --events "$t/events.tsv" switchover_start
    "${SYS}_switchover" "$old" "$cand" >"$t/switchover.out" 2>&1 || cmd_rc=$?
    "$PY" "$WRITER" stamp --events "$t/events.tsv" switchover_end
    [ "$cmd_rc" = - ] && cmd_rc=0
    log "  switchover $old -> $cand: exit $cmd_rc"
  fi
  fault_wall=$(awk -F'\t' '$1 == "kill" || $1 == "switchover_start" { print $3; exit }' "$t/events.tsv")
  if ttfw=$("$PY" "$WRITER" wait --log "$t/writer.log" --events "$t/events.tsv" --timeout "$TIMEOUT" --after "$AFTER"); then
    log "  first write after the fault at +${ttfw}s"
  else
    note="no write within ${TIMEOUT} s of the fault"
    [ "$kind" = kill ] && note="no failover within ${TIMEOUT} s"
    log "  $note"
    note="$note (rows counted once $old was back)"
  fi
  stop_writer
  new=$("${SYS}_primary" 2>/dev/null) || new=-
  [ "$new" != - ] && [ "$new" != "$old" ] && promoted=$("${SYS}_promoted_at" "$new" "$fault_wall")
  t0=$(now)
  if [ "$kind" = kill ]; then
    log "  bringing $old back"
    "${SYS}_restore" "$old" >"$t/restore.out" 2>&1 || log "  restoring $old failed (exit $?); see $t/restore.out"
  fi
  if wait_converged; then rejoin=$(elapsed "$t0"); else converged=no; rc=1; fi
  log "  converged: $converged (${rejoin}s)"
  PGPASSWORD=$DB_PASSWORD "$PY" "$WRITER" check --log "$t/writer.log" --events "$t/events.tsv" --tsv "$TSV" \
    --meta "system=$SYSNAME" --meta "config=$CONFIG_DESC" --meta "kind=$kind" --meta "trial=$n" \
    --meta "fault_wall=$fault_wall" --meta "old_primary=$old" --meta "new_primary=$new" --meta "cmd_rc=$cmd_rc" \
    --meta "rejoin_s=$rejoin" --meta "converged=$converged" --meta "promoted_s=$promoted" --meta "load=$LOAD" \
    --meta "load_waited_s=$LOAD_WAITED" --meta "note=$note" \
    "$DSN" >"$t/check.json" 2>"$t/check.err" || log "  check failed; see $t/check.err"
  log "  $(tail -1 "$TSV" | awk -F'\t' '{ printf "ttfw %s s, gap %s s, acked %s, lost %s, uncertain %s, new primary %s", $9, $10, $15, $17, $16, $7 }')"
  return "$rc"
}

# run_system: the trials of one system (SYS, SYSNAME, LABEL, DSN set by its setup).
run_system() {
  local i
  wait_converged || die "$SYSNAME has not converged before its first trial"
  for i in $(seq 1 "$TRIALS"); do
    trial kill "$i" || { log "$SYSNAME did not converge after kill trial $i; skipping its remaining trials"; return 0; }
  done
  for i in $(seq 1 "$SWITCHOVERS"); do
    trial switchover "$i" || { log "$SYSNAME did not converge after switchover $i; skipping its remaining trials"; return 0; }
  done
}

# ---- machine ----------------------------------------------------------------------------------
{
  printf 'date_utc\t%s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
  printf 'nproc\t%s\n' "$(nproc)"
  printf 'cpu\t%s\n' "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
  printf 'memory\t%s\n' "$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
  printf 'kernel\t%s\n' "$(uname -r)"
  printf 'postgres\t%s\n' "$("$PG_BIN/postgres" --version)"
  printf 'systems\t%s\n' "$SYSTEMS"
  printf 'trials\t%s\n' "$TRIALS"
  printf 'switchovers\t%s\n' "$SWITCHOVERS"
  printf 'timeout_s\t%s\n' "$TIMEOUT"
  printf 'interval_ms\t%s\n' "$INTERVAL_MS"
  printf 'pgrepl_switchover\t%s\n' "$PGREPL_SWITCHOVER"
  if [[ " $SYSTEMS " == *" pgrepl"* ]]; then
    printf 'pgrepl_commit\t%s%s\n' "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
      "$([ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no -- crates Cargo.toml Cargo.lock 2>/dev/null)" ] && echo ' (with uncommitted changes to the sources)')"
    printf 'pgrepl_binary\t%s\n' "$(date -u -r "$PGREPL" '+built %Y-%m-%d %H:%M UTC')"
  fi
  if [[ "$SYSTEMS" == *patroni* ]]; then
    printf 'patroni\t%s\n' "$("$PATRONI" --version 2>&1 | head -1) (Debian $(dpkg-query -W -f='${Version}' patroni 2>/dev/null))"
    printf 'etcd\t%s\n' "$("$ETCD" --version 2>&1 | head -1) (Debian $(dpkg-query -W -f='${Version}' etcd-server 2>/dev/null))"
    printf 'haproxy\t%s\n' "$("$HAPROXY" -v | head -1)"
    printf 'psycopg2\t%s\n' "$("$PY" -c 'import psycopg2; print(psycopg2.__version__)')"
  fi
  printf 'load_at_start\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
} >"$OUT/machine.tsv"

# ---- the systems ------------------------------------------------------------------------------
for s in $SYSTEMS; do
  SYSNAME=$s
  LABEL=$s
  case $s in
    pgrepl|pgrepl-sync)
      SYS=pgrepl
      PGREPL_SYNC=off
      [ "$s" = pgrepl-sync ] && PGREPL_SYNC=on
      pgrepl_setup
      run_system
      pgrepl_teardown ;;
    patroni-*)
      cfg=${s#patroni-}
      patroni_setup "$cfg"
      run_system
      patroni_teardown "$cfg" ;;
  esac
done
[ -n "$ETCD_PID" ] && { stop_pid "$ETCD_PID" 10; ETCD_PID=; }

# ---- report -------------------------------------------------------------------------------------
[ -s "$TSV" ] || die "no trial was recorded"
doc_args=()
[ "$PUBLISH" = 1 ] && doc_args=(--doc "$ROOT/docs/benchmarks.md")
"$PY" "$ROOT/bench/failover_report.py" "$OUT" "${doc_args[@]}"
log "done; raw results in $OUT"
