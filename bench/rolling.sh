#!/usr/bin/env bash
# Rolling-restart benchmark (see docs/benchmarks.md, "Rolling restart"): what changing a setting
# that needs a restart costs the writers of a running cluster, with pgrepl's `restart --rolling`
# beside an in-place restart of the primary and, in the same run, Debian's Patroni.
#
# Each system is a 3-member cluster (a primary and 2 streaming replicas) as bench/failover.sh sets
# it up (bench/clusters.sh), loaded with `pgbench -N` through its read-write endpoint by
# BENCH_ROLLING_CLIENTS clients, each connecting anew for every transaction (-C) and writing a
# per-transaction log (-l, completion time to the microsecond). pgbench 15 ends a client for good
# on a connection error, so every client is its own pgbench process (-c 1) run again as soon as it
# ends (after 50 ms when it failed), in runs of BENCH_ROLLING_CHUNK seconds, the first run of
# client i lasting i seconds so that the clients' run boundaries do not line up.
#
# Trials (BENCH_ROLLING_TRIALS of each, the cluster converged and the load average waited for
# before each; pgbench_history emptied before the load starts):
#   pgrepl, pgrepl-sync   rolling: `pgrepl config set shared_buffers=<128 + 16 x trial>MB`, a wait
#                           until every member shows it pending restart, then
#                           `pgrepl restart --rolling --pending`;
#                         inplace: `pgrepl restart <primary>` (the primary restarted in place, no
#                           switchover: what `patronictl restart` does to a leader).
#                         pgrepl-sync is the same cluster made with PGREPL_SYNCHRONOUS=on.
#   patroni-defaults      cluster: `patronictl restart <cluster> --force` (every member, one
#                           POST /restart after the other, the leader in place: see the docs);
#                         inplace: `patronictl restart <cluster> <leader> --force`.
#                         Patroni's own defaults (ttl 30, loop_wait 10, retry_timeout 10), HAProxy
#                         with Patroni's documented check; no setting is changed before its restarts.
# Measured per trial (bench/rolling_report.py, from the raw files): the command's wall time; the
# write gap, the longest interval between two committed transactions (any client) that overlaps
# the window from the first command's start to the restart command's end; the longest such
# interval before the window (the undisturbed load's own); transactions that failed (a client
# ended in a transaction by a lost connection: its outcome unknown to it) and connection attempts
# that failed (a new transaction's, or a pgbench run's first); rows lost (transactions pgbench
# logged as committed minus rows in pgbench_history); which members' PostgreSQL restarted
# (pg_postmaster_start_time before and after) and their shared_buffers after.
#
# Raw results go to bench/results/<UTC stamp>-rolling/ (one directory per trial: pgbench's logs
# and outputs, the commands' outputs, events.tsv, trial.tsv; per system the output of its setup
# and its members' logs: pgrepl-members/, pgrepl-sync-members/, patroni-defaults-logs/); the
# summary is printed, and with BENCH_PUBLISH=1 written into docs/benchmarks.md between the
# bench:rolling markers.
#
# Usage (as root):  bash bench/rolling.sh   (or `make bench-rolling`)
#   (PGREPL_BENCH=1 bash scripts/setup.sh installs haproxy, patroni, etcd-server, python3-psycopg2)
# Knobs (environment):
#   BENCH_ROLLING_TRIALS=3        trials of each kind per system
#   BENCH_ROLLING_SYSTEMS="pgrepl pgrepl-sync patroni-defaults"   (also: patroni-tuned)
#   BENCH_ROLLING_CLIENTS=4       pgbench clients (one process each)
#   BENCH_ROLLING_SCALE=10        pgbench -i scale factor
#   BENCH_ROLLING_CHUNK=5         seconds of each pgbench run (-T)
#   BENCH_ROLLING_WARMUP=4        seconds of load before the first command
#   BENCH_ROLLING_AFTER=3         seconds of load kept after the restart command ends
#   BENCH_ROLLING_WAIT=120        pgrepl restart --wait (seconds per member)
#   BENCH_ROLLING_CONVERGE_TIMEOUT=180
#   BENCH_LOAD_MAX=1.0 BENCH_LOAD_WAIT=30   before each trial (recorded)
#   BENCH_PUBLISH=0  BENCH_BUILD=1  BENCH_PYTHON=/usr/bin/python3
#   PG_BIN=/usr/lib/postgresql/15/bin HAPROXY=/usr/sbin/haproxy ETCD=/usr/bin/etcd
#   PATRONI=/usr/bin/patroni PATRONICTL=/usr/bin/patronictl
# Clients connect without TLS (PGSSLMODE=disable) to both systems, so the per-transaction
# connection costs the same. Passwords reach the clients through their environment only. Never
# uses port 5432 or 5433; everything it starts is stopped on exit, failure or Ctrl-C.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PGREPL=$ROOT/target/release/pgrepl
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PY=${BENCH_PYTHON:-/usr/bin/python3}
HAPROXY=${HAPROXY:-/usr/sbin/haproxy}
ETCD=${ETCD:-/usr/bin/etcd}
PATRONI=${PATRONI:-/usr/bin/patroni}
PATRONICTL=${PATRONICTL:-/usr/bin/patronictl}
TRIALS=${BENCH_ROLLING_TRIALS:-3}
SYSTEMS=${BENCH_ROLLING_SYSTEMS:-pgrepl pgrepl-sync patroni-defaults}
CLIENTS=${BENCH_ROLLING_CLIENTS:-4}
SCALE=${BENCH_ROLLING_SCALE:-10}
CHUNK=${BENCH_ROLLING_CHUNK:-5}
WARMUP=${BENCH_ROLLING_WARMUP:-4}
AFTER=${BENCH_ROLLING_AFTER:-3}
RESTART_WAIT=${BENCH_ROLLING_WAIT:-120}
CONVERGE_TIMEOUT=${BENCH_ROLLING_CONVERGE_TIMEOUT:-180}
LOAD_MAX=${BENCH_LOAD_MAX:-1.0}
LOAD_WAIT=${BENCH_LOAD_WAIT:-30}
PUBLISH=${BENCH_PUBLISH:-0}
WRITER=$ROOT/bench/failover_writer.py   # (bench/clusters.sh's _kill functions; not used here)
PGREPL_SWITCHOVER="switchover --to %s"   # (bench/clusters.sh's pgrepl_switchover; not used here)

exec 3>&2
log() { printf '[bench-rolling %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&3; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (pgrepl switches to the postgres OS user itself; Patroni and etcd are started as postgres)"
id postgres >/dev/null 2>&1 || die "no OS user postgres (run scripts/setup.sh)"
for b in psql postgres pg_ctl pgbench; do [ -x "$PG_BIN/$b" ] || die "$PG_BIN/$b not found (set PG_BIN)"; done
[[ $CLIENTS =~ ^[1-9][0-9]*$ && $CHUNK =~ ^[1-9][0-9]*$ && $TRIALS =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROLLING_CLIENTS, _CHUNK and _TRIALS must be positive integers"
for s in $SYSTEMS; do
  case $s in
    pgrepl|pgrepl-sync) ;;
    patroni-defaults|patroni-tuned)
      for b in "$HAPROXY" "$ETCD" "$PATRONI" "$PATRONICTL"; do
        [ -x "$b" ] || die "$b not found (PGREPL_BENCH=1 bash scripts/setup.sh installs haproxy, etcd-server and patroni)"
      done ;;
    *) die "unknown system $s in BENCH_ROLLING_SYSTEMS (pgrepl, pgrepl-sync, patroni-defaults, patroni-tuned)" ;;
  esac
done
if [[ " $SYSTEMS " == *" pgrepl"* ]] && { [ "${BENCH_BUILD:-1}" = 1 ] || [ ! -x "$PGREPL" ]; }; then
  log "building pgrepl (release)"
  (cd "$ROOT" && cargo build --release --bin pgrepl --quiet) || die "cargo build failed"
fi

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$ROOT/bench/results/$STAMP-rolling
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/pgrepl-bench-rolling.XXXXXX)
chown postgres:postgres "$WORK"
chmod 0755 "$WORK"
log "raw results: $OUT; scratch: $WORK"

# ---- state, and cleanup (also on failure or interrupt) ------------------------------------------
PD=$WORK/pgrepl
ETCD_PID=
HAPROXY_PID=
PAT_DIR=
declare -A PAT_PID=()
LOAD_PIDS=()
LOAD_DIR=

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/clusters.sh"

# stop_load: ask the clients to end (their current pgbench run ends within CHUNK seconds), then
# wait for them; a client still running after CHUNK + 10 seconds is killed with its pgbench.
stop_load() {
  local p i
  [ "${#LOAD_PIDS[@]}" -gt 0 ] || return 0
  touch "$LOAD_DIR/stop"
  for ((i = 0; i < (CHUNK + 10) * 10; i++)); do
    for p in "${LOAD_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && break; p=; done
    [ -z "$p" ] && break
    sleep 0.1
  done
  for p in "${LOAD_PIDS[@]}"; do
    if kill -0 "$p" 2>/dev/null; then
      log "a load client (pid $p) did not end; killing it and its pgbench"
      pkill -KILL -P "$p" 2>/dev/null || true
      kill -KILL "$p" 2>/dev/null || true
    fi
    wait "$p" 2>/dev/null || true
  done
  LOAD_PIDS=()
}

cleanup() {
  local rc=$? keep=0
  trap - EXIT INT TERM
  stop_load
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

# ---- the load ------------------------------------------------------------------------------------
# The rw endpoint's port, from DSN (set by the system's setup).
rw_port() { sed -n 's/.*port=\([0-9]*\).*/\1/p' <<<"$DSN"; }

# load_client I DIR: client I's pgbench runs, one after the other, until DIR/stop exists. Each
# run's log is DIR/cI.<pid> (pgbench -l), its output appended to DIR/cI.out, and its end (epoch,
# exit status) to DIR/cI.runs.
load_client() {
  local i=$1 dir=$2 secs=$1 rc port
  port=$(rw_port)
  (( secs <= CHUNK )) || secs=$CHUNK
  while [ ! -e "$dir/stop" ]; do
    rc=0
    PGPASSWORD=$DB_PASSWORD PGSSLMODE=disable PGGSSENCMODE=disable "$PG_BIN/pgbench" -n -N -C -c 1 -j 1 -T "$secs" \
      -l --log-prefix="$dir/c$i" -h 127.0.0.1 -p "$port" -U postgres postgres >>"$dir/c$i.out" 2>&1 || rc=$?
    printf '%s\t%s\n' "$(now)" "$rc" >>"$dir/c$i.runs"
    secs=$CHUNK
    [ "$rc" -eq 0 ] || sleep 0.05
  done
}

start_load() { # DIR
  local i
  LOAD_DIR=$1
  for ((i = 1; i <= CLIENTS; i++)); do
    load_client "$i" "$1" 3>&- &
    LOAD_PIDS+=($!)
  done
}

# sql_rw SQL: SQL through the rw endpoint, as the admin user.
sql_rw() {
  PGPASSWORD=$DB_PASSWORD PGSSLMODE=disable "$PG_BIN/psql" -X -q -At -h 127.0.0.1 -p "$(rw_port)" -U postgres -d postgres -c "$1"
}

# ---- what each system is asked -------------------------------------------------------------------
# NAME PORT of every member, for reading its PostgreSQL directly.
pgrepl_member_ports() {
  pgrepl_status | "$PY" -c '
import json, sys
for m in json.load(sys.stdin)["members"]:
    print(m["name"], m["port"])'
}
patroni_member_ports() { local n; for n in "${NODES[@]}"; do echo "$n ${PAT_PG[$n]}"; done; }

# members_snapshot FILE: per member, its postmaster's start time and shared_buffers ("-" when it
# does not answer), as "NAME<TAB>START<TAB>SHARED_BUFFERS".
members_snapshot() {
  local n p v
  "${SYS}_member_ports" | while read -r n p; do
    v=$(PGPASSWORD=$DB_PASSWORD PGSSLMODE=disable "$PG_BIN/psql" -X -q -At -F $'\t' -h 127.0.0.1 -p "$p" -U postgres -d postgres \
      -c "select pg_postmaster_start_time(), current_setting('shared_buffers')" 2>/dev/null) || v=$'-\t-'
    printf '%s\t%s\n' "$n" "$v"
  done >"$1"
}

# pgrepl_all_pending: every member shows a parameter pending restart.
pgrepl_all_pending() {
  pgrepl_status | "$PY" -c '
import json, sys
m = json.load(sys.stdin)["members"]
sys.exit(0 if m and all(x["pending_restart"] for x in m) else 1)'
}

stamp() { printf '%s\t%s\n' "$1" "$(now)" >>"$2"; } # EVENT FILE

# run_commands KIND N T OLD: trial N's commands (OLD: the primary before them), stamped in
# T/events.tsv: "window_start" at the first command, "restart_start" and "restart_end" around the
# restart command. Sets CMD_RC and SB (the shared_buffers asked for, or "-").
run_commands() {
  local kind=$1 n=$2 t=$3 old=$4 i
  SB=-
  CMD_RC=0
  case $SYS:$kind in
    pgrepl:rolling)
      SB="$((128 + 16 * n))MB"
      stamp window_start "$t/events.tsv"
      "$PGREPL" --dir "$PD" config set "shared_buffers=$SB" >"$t/config-set.out" 2>&1 || { log "  config set failed; see $t/config-set.out"; CMD_RC=config-set; }
      for ((i = 0; i < 300; i++)); do pgrepl_all_pending && break; sleep 0.2; done
      stamp pending_seen "$t/events.tsv"
      pgrepl_all_pending || log "  not every member shows shared_buffers pending restart after 60 s"
      pgrepl_status >"$t/status-pending.json" || true
      stamp restart_start "$t/events.tsv"
      "$PGREPL" --dir "$PD" restart --rolling --pending --wait "$RESTART_WAIT" >"$t/restart.out" 2>&1 || CMD_RC=$?
      stamp restart_end "$t/events.tsv" ;;
    pgrepl:inplace)
      stamp window_start "$t/events.tsv"
      stamp restart_start "$t/events.tsv"
      "$PGREPL" --dir "$PD" restart "$old" --wait "$RESTART_WAIT" >"$t/restart.out" 2>&1 || CMD_RC=$?
      stamp restart_end "$t/events.tsv" ;;
    patroni:cluster|patroni:inplace)
      local args=("bench-$PAT_CFG")
      [ "$kind" = inplace ] && args+=("$old")
      stamp window_start "$t/events.tsv"
      stamp restart_start "$t/events.tsv"
      "$PATRONICTL" -c "$PAT_DIR/node1/patroni.yml" restart "${args[@]}" --force >"$t/restart.out" 2>&1 || CMD_RC=$?
      stamp restart_end "$t/events.tsv" ;;
    *) die "no trial $kind for $SYS" ;;
  esac
}

# ---- one trial -----------------------------------------------------------------------------------
trial() { # KIND N
  local kind=$1 n=$2 t=$OUT/$LABEL-$1-$2 old new converged=yes rejoin=- t0 history
  mkdir -p "$t"
  wait_converged || { log "$SYSNAME has not converged before $kind $n"; return 1; }
  wait_for_quiet
  old=$("${SYS}_primary") || { log "no primary before the trial"; return 1; }
  log "$LABEL $kind $n: primary $old (load $LOAD, waited ${LOAD_WAITED}s)"
  members_snapshot "$t/members-before.tsv"
  sql_rw "truncate pgbench_history" || { log "  truncate pgbench_history failed"; return 1; }
  stamp load_start "$t/events.tsv"
  start_load "$t"
  sleep "$WARMUP"
  run_commands "$kind" "$n" "$t" "$old"
  log "  $(tail -1 "$t/restart.out" 2>/dev/null) (exit $CMD_RC)"
  sleep "$AFTER"
  stamp load_stop "$t/events.tsv"
  stop_load
  t0=$(now)
  if wait_converged; then rejoin=$(elapsed "$t0"); else converged=no; fi
  new=$("${SYS}_primary" 2>/dev/null) || new=-
  history=$(sql_rw "select count(*) from pgbench_history" 2>/dev/null) || history=-
  members_snapshot "$t/members-after.tsv"
  {
    printf 'system\t%s\nconfig\t%s\nkind\t%s\ntrial\t%s\nold_primary\t%s\nnew_primary\t%s\n' \
      "$SYSNAME" "$CONFIG_DESC" "$kind" "$n" "$old" "$new"
    printf 'cmd_rc\t%s\nshared_buffers\t%s\nhistory_rows\t%s\nconverged\t%s\nrejoin_s\t%s\nload\t%s\nload_waited_s\t%s\n' \
      "$CMD_RC" "$SB" "$history" "$converged" "$rejoin" "$LOAD" "$LOAD_WAITED"
  } >"$t/trial.tsv"
  log "  $("$PY" "$ROOT/bench/rolling_report.py" --trial "$t" 2>&1 | tail -1)"
  [ "$converged" = yes ]
}

run_system() { # KIND...
  local kind i
  for kind in "$@"; do
    for i in $(seq 1 "$TRIALS"); do
      trial "$kind" "$i" || { log "$SYSNAME did not converge after $kind $i; skipping its remaining trials"; return 0; }
    done
  done
}

pgbench_init() {
  log "$SYSNAME: pgbench -i -s $SCALE through the rw endpoint"
  PGPASSWORD=$DB_PASSWORD PGSSLMODE=disable "$PG_BIN/pgbench" -i -q -s "$SCALE" -h 127.0.0.1 -p "$(rw_port)" -U postgres postgres \
    >"$OUT/$SYSNAME-pgbench-init.out" 2>&1 || die "pgbench -i failed; see $OUT/$SYSNAME-pgbench-init.out"
}

# ---- machine -------------------------------------------------------------------------------------
{
  printf 'date_utc\t%s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
  printf 'nproc\t%s\n' "$(nproc)"
  printf 'cpu\t%s\n' "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
  printf 'memory\t%s\n' "$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
  printf 'kernel\t%s\n' "$(uname -r)"
  printf 'postgres\t%s\n' "$("$PG_BIN/postgres" --version)"
  printf 'pgbench\t%s\n' "$("$PG_BIN/pgbench" --version)"
  printf 'systems\t%s\n' "$SYSTEMS"
  printf 'trials\t%s\n' "$TRIALS"
  printf 'clients\t%s\n' "$CLIENTS"
  printf 'scale\t%s\n' "$SCALE"
  printf 'chunk_s\t%s\n' "$CHUNK"
  printf 'warmup_s\t%s\n' "$WARMUP"
  printf 'after_s\t%s\n' "$AFTER"
  printf 'load_max\t%s\n' "$LOAD_MAX"
  printf 'load_wait_s\t%s\n' "$LOAD_WAIT"
  if [[ " $SYSTEMS " == *" pgrepl"* ]]; then
    printf 'pgrepl_commit\t%s%s\n' "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
      "$([ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no -- crates Cargo.toml Cargo.lock 2>/dev/null)" ] && echo ' (with uncommitted changes to the sources)')"
    printf 'pgrepl_binary\t%s\n' "$(date -u -r "$PGREPL" '+built %Y-%m-%d %H:%M UTC')"
  fi
  if [[ "$SYSTEMS" == *patroni* ]]; then
    printf 'patroni\t%s\n' "$("$PATRONI" --version 2>&1 | head -1) (Debian $(dpkg-query -W -f='${Version}' patroni 2>/dev/null))"
    printf 'etcd\t%s\n' "$("$ETCD" --version 2>&1 | head -1) (Debian $(dpkg-query -W -f='${Version}' etcd-server 2>/dev/null))"
    printf 'haproxy\t%s\n' "$("$HAPROXY" -v | head -1)"
  fi
  printf 'load_at_start\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
} >"$OUT/machine.tsv"

# ---- the systems ---------------------------------------------------------------------------------
for s in $SYSTEMS; do
  SYSNAME=$s
  LABEL=$s
  case $s in
    pgrepl|pgrepl-sync)
      SYS=pgrepl
      PGREPL_SYNC=off
      [ "$s" = pgrepl-sync ] && PGREPL_SYNC=on
      pgrepl_setup
      mv "$OUT/pgrepl-up.out" "$OUT/$s-up.txt"  # (pgrepl_setup's name, the same for both modes)
      wait_converged || die "$s has not converged after pgrepl up"
      pgbench_init
      run_system rolling inplace
      pgrepl_save_logs
      mv "$OUT/pgrepl-logs" "$OUT/$s-members"
      log "pgrepl: destroying the cluster"
      "$PGREPL" --dir "$PD" down --destroy >/dev/null 2>>"$OUT/cleanup.err" || log "pgrepl down --destroy failed (see $OUT/cleanup.err)" ;;
    patroni-*)
      SYS=patroni
      PAT_CFG=${s#patroni-}
      patroni_setup "$PAT_CFG"
      pgbench_init
      run_system cluster inplace
      patroni_teardown "$PAT_CFG" ;;
  esac
done
[ -n "$ETCD_PID" ] && { stop_pid "$ETCD_PID" 10; ETCD_PID=; }

# ---- report --------------------------------------------------------------------------------------
doc_args=()
[ "$PUBLISH" = 1 ] && doc_args=(--doc "$ROOT/docs/benchmarks.md")
"$PY" "$ROOT/bench/rolling_report.py" "$OUT" "${doc_args[@]}"
log "done; raw results in $OUT"
