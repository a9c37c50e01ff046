#!/usr/bin/env bash
# The clusters of the failover-style benchmarks (sourced, not run; after bench/lib.sh): pgrepl's
# (`pgrepl up --replicas 2`, its router's rw endpoint) and Debian's Patroni (three nodes on one
# local etcd, HAProxy in front checking GET /primary), each behind the same small interface, called
# as "${SYS}_NAME": _setup, _primary, _replicas, _converged, _kill, _restore, _switchover,
# _promoted_at, _teardown. Taken out of bench/failover.sh so that bench/rolling.sh runs the same
# clusters. They expect from the script that sources them: log, die, PGREPL, PD, PG_BIN, PY,
# HAPROXY, PATRONI, PATRONICTL, WRITER, OUT, WORK, CONVERGE_TIMEOUT, SYS, PGREPL_SYNC and
# PGREPL_SWITCHOVER (pgrepl); ETCD and ETCD_PID (start_etcd), HAPROXY_PID, PAT_DIR and the
# associative array PAT_PID (Patroni). They set DSN, DB_PASSWORD and CONFIG_DESC.

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
