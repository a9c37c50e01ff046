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

# now, wait_for_quiet, destroy_cluster, free_ports, is_proc, start_etcd, secret, gen_password,
# stop_pid: shared with the other benchmark scripts.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# the pgrepl and Patroni clusters (pgrepl_* and patroni_*), stop_haproxy, stop_patroni,
# log_offsets, elapsed, wait_converged: shared with bench/rolling.sh.
source "$(dirname "${BASH_SOURCE[0]}")/clusters.sh"

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
