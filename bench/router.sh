#!/usr/bin/env bash
# pgrepl router benchmark (see docs/benchmarks.md, "Router overhead"):
#   pgbench select-only (-S) and simple-update (-N) at 1, 8 and 32 clients against one primary,
#   four ways in one run: direct to the primary's port, through pgrepl's rw endpoint (the
#   router `up` started, splicing in the kernel), through a second pgrepl router in copy mode
#   (`router_splice = copy`, the same cluster's store, its own ports), and through HAProxy in
#   plain TCP mode to the same primary. The four targets are interleaved per (mode, clients), in
#   a rotating order, and the whole matrix is repeated.
#   Per run: TPS, average latency, and CPU time (from /proc) of the proxy process, pgbench, the
#   primary's PostgreSQL and the whole machine.
#   Then the idle row: BENCH_IDLE_CONNECTIONS idle connections (pgbench clients that only
#   \sleep) through each proxy in turn, and that proxy's CPU in ms per second of wall time
#   (utime+stime from /proc/PID/stat over BENCH_IDLE_WINDOW seconds) with them open and, just
#   before, with none; the goal: they add under 1 ms per second.
# Raw results go to bench/results/<UTC timestamp>-router/; the figures replace the text between
# the bench:router markers of docs/benchmarks.md and are printed.
#
# Usage (as root, like pgrepl's other commands on this machine):  bash bench/router.sh
#   (also run at the end of bench/run.sh, so by `make bench`, unless BENCH_ROUTER=0)
# Knobs (environment):
#   BENCH_ROUTER_SECONDS=15        pgbench -T of each run
#   BENCH_ROUTER_REPEATS=3         passes over the whole matrix (figures are medians over them; with
#                                  3, one run disturbed by the rest of the shared machine does not decide)
#   BENCH_ROUTER_CLIENTS="1 8 32"  client counts (-c N -j min(N,2))
#   BENCH_ROUTER_MODES="select-only simple-update"
#   BENCH_ROUTER_SCALE=10          pgbench -i scale factor
#   BENCH_IDLE_MAX=20              before each run, wait until the machine's busy + stolen time over 2 s
#   BENCH_IDLE_WAIT=60             is below this % of all CPUs, for at most this many seconds (recorded)
#   BENCH_STEAL_MAX=10             a run during which the hypervisor stole more than this % of the CPUs
#   BENCH_RETRIES=2                is recorded as disturbed and redone, up to this many times
#   BENCH_HAPROXY_NBTHREAD=1       HAProxy's nbthread ("" leaves HAProxy's default: one per CPU)
#   BENCH_LOAD_MAX=1.0             before starting, wait until the 1-minute load average is below
#   BENCH_LOAD_WAIT=60             this, for at most this many seconds (then go on; recorded)
#   BENCH_WRITE_DOC=1              0: only print the markdown, leave docs/benchmarks.md alone
#   BENCH_BUILD=1                  0: use target/release/pgrepl as it is
#   BENCH_PGREPL=target/release/pgrepl  the binary to measure (another one: not built; BENCH_BUILD=0)
#   BENCH_ROUTER_MATRIX=1          0: only the idle row
#   BENCH_IDLE_CONNECTIONS=1000    idle connections of the idle row (0: no idle row); the cluster's
#                                  max_connections is this + 100
#   BENCH_IDLE_WINDOW=30           seconds each idle figure is measured over (CPU is counted in
#                                  clock ticks of 10 ms: 30 s resolve 0.33 ms per second)
#   PG_BIN=/usr/lib/postgresql/15/bin   HAPROXY=/usr/sbin/haproxy
# The admin password is read from the cluster's secrets.json into the environment of the one
# client process that needs it; it is never printed or put on a command line.
set -euo pipefail
# The router's own cost, not TLS's (bench/tls.sh measures that): clients speak plain TCP, as
# they may over loopback (require_tls is off for a loopback listen).
export PGSSLMODE=${PGSSLMODE:-disable}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PGREPL=${BENCH_PGREPL:-$ROOT/target/release/pgrepl}
[ -n "${BENCH_PGREPL:-}" ] && BENCH_BUILD=${BENCH_BUILD:-0}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
HAPROXY=${HAPROXY:-/usr/sbin/haproxy}
RUN_SECONDS=${BENCH_ROUTER_SECONDS:-15}
REPEATS=${BENCH_ROUTER_REPEATS:-3}
CLIENTS=${BENCH_ROUTER_CLIENTS:-1 8 32}
MODES=${BENCH_ROUTER_MODES:-select-only simple-update}
SCALE=${BENCH_ROUTER_SCALE:-10}
IDLE_MAX=${BENCH_IDLE_MAX:-20}
IDLE_WAIT=${BENCH_IDLE_WAIT:-60}
STEAL_MAX=${BENCH_STEAL_MAX:-10}
RETRIES=${BENCH_RETRIES:-2}
NBTHREAD=${BENCH_HAPROXY_NBTHREAD-1}
LOAD_MAX=${BENCH_LOAD_MAX:-1.0}
LOAD_WAIT=${BENCH_LOAD_WAIT:-60}
WRITE_DOC=${BENCH_WRITE_DOC:-1}
MATRIX=${BENCH_ROUTER_MATRIX:-1}
IDLE_CONNECTIONS=${BENCH_IDLE_CONNECTIONS:-1000}
IDLE_WINDOW=${BENCH_IDLE_WINDOW:-30}
TARGETS=(direct pgrepl copy haproxy)

log() { printf '[bench-router %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (pgrepl switches to the postgres OS user itself)"
id postgres >/dev/null 2>&1 || die "no OS user postgres (run scripts/setup.sh)"
for b in pgbench psql; do [ -x "$PG_BIN/$b" ] || die "$PG_BIN/$b not found (set PG_BIN)"; done
[ -x "$HAPROXY" ] || die "$HAPROXY not found (PGREPL_BENCH=1 bash scripts/setup.sh installs it)"
for m in $MODES; do case $m in select-only|simple-update) ;; *) die "unknown mode $m";; esac; done
# Build (a no-op when the binary is up to date), so the commit recorded below is the one measured.
if [ "${BENCH_BUILD:-1}" = 1 ] || [ ! -x "$PGREPL" ]; then
  log "building pgrepl (release)"
  (cd "$ROOT" && cargo build --release --bin pgrepl --quiet) || die "cargo build failed"
fi

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$ROOT/bench/results/$STAMP-router
mkdir -p "$OUT/runs"
# The cluster directory lives here: reachable by the postgres user, short enough for unix sockets.
WORK=$(mktemp -d /tmp/pgrepl-bench-router.XXXXXX)
chown postgres:postgres "$WORK"
chmod 0755 "$WORK"
D=$WORK/cluster
# The copy-mode router's own directory: its pgrepl.toml, and the cluster's store (a link).
D2=$WORK/copy-router
HAPROXY_PID=
COPY_PID=
IDLE_PID=
log "raw results: $OUT; scratch: $WORK"

# now, wait_for_quiet, destroy_cluster, free_ports, secret: shared with the other benchmark scripts.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ---- cleanup, also on failure or interrupt ---------------------------------------------------
cleanup() {
  local rc=$? keep=0
  trap - EXIT INT TERM
  if [ -n "$IDLE_PID" ] && kill -0 "$IDLE_PID" 2>/dev/null; then
    kill "$IDLE_PID" 2>/dev/null || true
    wait "$IDLE_PID" 2>/dev/null || true
  fi
  if [ -n "$COPY_PID" ] && kill -0 "$COPY_PID" 2>/dev/null; then
    log "cleanup: stopping the copy-mode router (pid $COPY_PID)"
    kill "$COPY_PID" 2>/dev/null || true
    wait "$COPY_PID" 2>/dev/null || true
  fi
  if [ -n "$HAPROXY_PID" ] && kill -0 "$HAPROXY_PID" 2>/dev/null; then
    log "cleanup: stopping haproxy (pid $HAPROXY_PID)"
    kill "$HAPROXY_PID" 2>/dev/null || true
    wait "$HAPROXY_PID" 2>/dev/null || true
  fi
  if [ -e "$D/pgrepl.toml" ]; then destroy_cluster "$D" || keep=1; fi
  if [ "$keep" -eq 0 ]; then rm -rf "$WORK"; fi
  [ "$rc" -eq 0 ] || log "failed (exit $rc); partial raw results in $OUT"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- helpers ----------------------------------------------------------------------------------

# cpu_window SECONDS: "busy% steal%" of all CPUs over the next SECONDS (busy: neither idle,
# iowait nor stolen).
cpu_window() {
  local a b
  a=$(head -1 /proc/stat)
  sleep "$1"
  b=$(head -1 /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN {
    n = split(a, x); split(b, y); total = 0
    for (i = 2; i <= 9 && i <= n; i++) total += y[i] - x[i]   # user..steal (guest is within user)
    idle = (y[5] - x[5]) + (y[6] - x[6]); steal = y[9] - x[9]
    if (total <= 0) total = 1
    printf "%.0f %.0f\n", 100 * (total - idle - steal) / total, 100 * steal / total
  }'
}

# Before each run: wait until the machine (our idle cluster included) is quiet: busy + stolen
# time over a 2-s window below IDLE_MAX % of all CPUs, for at most IDLE_WAIT seconds, then go on.
# Sets IDLE (the last window's "busy/steal") and IDLE_WAITED (seconds).
wait_idle() {
  local start=$SECONDS busy steal
  while :; do
    read -r busy steal <<<"$(cpu_window 2)"
    (( busy + steal < IDLE_MAX )) && break
    if (( SECONDS - start >= IDLE_WAIT )); then
      log "  machine still busy (${busy}% busy, ${steal}% stolen) after ${IDLE_WAIT}s; going on (recorded)"
      break
    fi
  done
  IDLE="$busy/$steal"
  IDLE_WAITED=$((SECONDS - start))
}

# steal_of_run ID: % of the CPUs stolen by the hypervisor during run ID (from its snapshots).
steal_of_run() {
  python3 -c '
import json, sys
a, b = (json.load(open(f"{sys.argv[1]}.{w}.json"))["cpu"] for w in ("before", "after"))
d = {k: b[k] - a[k] for k in a}
total = sum(v for k, v in d.items() if k not in ("guest", "guest_nice")) or 1
print(round(100 * d["steal"] / total))
' "$1"
}



# psql_direct SQL: runs SQL on the primary as the admin user.
psql_direct() {
  PGPASSWORD="$(secret "$D" admin)" "$PG_BIN/psql" -X -q -At -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres -d postgres -c "$1"
}

member_pid() { head -1 "$D/members/$1/data/postmaster.pid"; }
router_pid() { tr -dc '0-9' <"$D/router.lock"; }
copy_router_pid() { tr -dc '0-9' <"$D2/router.lock" 2>/dev/null; }

# ticks PID: utime+stime of PID (all its threads), in clock ticks.
ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }

# ---- the cluster, the data, HAProxy ---------------------------------------------------------------
read -r RW_PORT RO_PORT HA_PORT COPY_PORT COPY_RO_PORT <<<"$(free_ports 5)"
log "starting a primary and a replica; rw endpoint 127.0.0.1:$RW_PORT, ro 127.0.0.1:$RO_PORT"
# Room for the idle row's connections, beside the matrix's.
MAX_CONNECTIONS=$(( IDLE_CONNECTIONS + 100 > 100 ? IDLE_CONNECTIONS + 100 : 100 ))
printf '[parameters]\nmax_connections = %s\n' "$MAX_CONNECTIONS" >"$WORK/bench.toml"
chmod 0644 "$WORK/bench.toml"
"$PGREPL" --dir "$D" up --replicas 1 --port "$RW_PORT" --ro-port "$RO_PORT" --config "$WORK/bench.toml" >"$OUT/up.out" 2>&1 \
  || die "pgrepl up failed; see $OUT/up.out"
PRIMARY=$("$PGREPL" --dir "$D" endpoints --rw)
PRIMARY_PORT=${PRIMARY##*:}
[[ $PRIMARY_PORT =~ ^[0-9]+$ ]] || die "unexpected output of endpoints --rw: $PRIMARY"
read -r PRIMARY_NAME REPLICA_NAME <<<"$("$PGREPL" --dir "$D" status --json | python3 -c '
import json, sys
m = json.load(sys.stdin)["members"]
p = [x["name"] for x in m if x["role"] == "primary" and x["state"] == "running"]
r = [x["name"] for x in m if x["role"] == "replica" and x["state"] == "streaming"]
if len(p) != 1 or len(r) != 1:
    sys.exit("unexpected members: " + ", ".join(" ".join((x["name"], x["role"], x["state"])) for x in m))
print(p[0], r[0])
')"
ROUTER_PID=$(router_pid)
grep -q router "/proc/$ROUTER_PID/cmdline" 2>/dev/null || die "pid $ROUTER_PID from $D/router.lock is not a running router"
log "primary $PRIMARY_NAME at $PRIMARY, replica $REPLICA_NAME; router pid $ROUTER_PID"

# The copy-mode router: `pgrepl router` on a directory of its own whose store is the cluster's
# (the file store, linked), with router_splice = copy and its own ports.
mkdir -p "$D2"
sed -e '/^router_splice *=/d' -e "s/^port *=.*/port = $COPY_PORT/" -e "s/^ro_port *=.*/ro_port = $COPY_RO_PORT/" \
  "$D/pgrepl.toml" >"$D2/pgrepl.toml"
grep -q "^port = $COPY_PORT\$" "$D2/pgrepl.toml" && grep -q "^ro_port = $COPY_RO_PORT\$" "$D2/pgrepl.toml" \
  || die "cannot set the copy-mode router's ports in $D2/pgrepl.toml (see $D/pgrepl.toml)"
# a top-level key: before the first table
sed -i "0,/^\[/s//router_splice = \"copy\"\n&/" "$D2/pgrepl.toml"
grep -q '^router_splice = "copy"$' "$D2/pgrepl.toml" || printf 'router_splice = "copy"\n' >>"$D2/pgrepl.toml"
cp -p "$D/secrets.json" "$D2/secrets.json"
ln -s "$D/store" "$D2/store"
chown -R postgres:postgres "$D2"
"$PGREPL" --dir "$D2" router >"$OUT/copy-router.log" 2>&1 &
COPY_PID=$!
for _ in $(seq 50); do
  [ -n "$(copy_router_pid)" ] && PGPASSWORD="$(secret "$D" admin)" "$PG_BIN/psql" -X -q -At -h 127.0.0.1 -p "$COPY_PORT" \
    -U postgres -d postgres -c 'select 1' >/dev/null 2>&1 && break
  sleep 0.2
done
[ "$(copy_router_pid)" = "$COPY_PID" ] || die "the copy-mode router did not start; see $OUT/copy-router.log"
grep -q "the router copies connections' bytes" "$OUT/copy-router.log" || die "the second router does not copy; see $OUT/copy-router.log"
log "copy-mode router pid $COPY_PID on 127.0.0.1:$COPY_PORT"

{
  echo "global"
  echo "    maxconn $(( 2 * MAX_CONNECTIONS ))"
  [ -n "$NBTHREAD" ] && echo "    nbthread $NBTHREAD"
  echo ""
  echo "defaults"
  echo "    mode tcp"
  echo "    timeout connect 5s"
  echo "    timeout client 1h"
  echo "    timeout server 1h"
  echo ""
  echo "listen pgrepl_bench"
  echo "    bind 127.0.0.1:$HA_PORT"
  echo "    maxconn $(( 2 * MAX_CONNECTIONS ))"
  echo "    server primary 127.0.0.1:$PRIMARY_PORT"
} >"$OUT/haproxy.cfg"
"$HAPROXY" -c -q -f "$OUT/haproxy.cfg" || die "haproxy rejects $OUT/haproxy.cfg"
"$HAPROXY" -f "$OUT/haproxy.cfg" -db >"$OUT/haproxy.log" 2>&1 &
HAPROXY_PID=$!
sleep 0.5
kill -0 "$HAPROXY_PID" 2>/dev/null || die "haproxy exited; see $OUT/haproxy.log"
[ "$(cat "/proc/$HAPROXY_PID/comm")" = haproxy ] || die "pid $HAPROXY_PID is not haproxy"
log "haproxy pid $HAPROXY_PID on 127.0.0.1:$HA_PORT (nbthread ${NBTHREAD:-default}, $(ls "/proc/$HAPROXY_PID/task" | wc -l) threads)"

log "loading pgbench scale $SCALE into the primary (database postgres)"
PGPASSWORD="$(secret "$D" admin)" "$PG_BIN/pgbench" -i -q -s "$SCALE" -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres postgres \
  >"$OUT/pgbench-init.out" 2>&1 || die "pgbench -i failed; see $OUT/pgbench-init.out"
psql_direct CHECKPOINT

{
  printf 'date_utc\t%s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
  printf 'nproc\t%s\n' "$(nproc)"
  printf 'cpu\t%s\n' "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
  printf 'memory\t%s\n' "$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
  printf 'kernel\t%s\n' "$(uname -r)"
  printf 'postgres\t%s\n' "$(psql_direct 'select version()' | sed 's/ on .*//')"
  printf 'pgbench\t%s\n' "$("$PG_BIN/pgbench" --version)"
  printf 'haproxy\t%s\n' "$("$HAPROXY" -v | head -1)"
  printf 'haproxy_nbthread\t%s\n' "${NBTHREAD:-default}"
  printf 'haproxy_threads\t%s\n' "$(ls "/proc/$HAPROXY_PID/task" | wc -l)"
  printf 'router_threads\t%s\n' "$(ls "/proc/$ROUTER_PID/task" | wc -l)"
  printf 'copy_router_threads\t%s\n' "$(ls "/proc/$COPY_PID/task" | wc -l)"
  printf 'router_mode\t%s\n' "$(grep -o "the kernel splices connections' bytes\|the router copies connections' bytes[^\"]*" "$D/router.log" | tail -1)"
  printf 'pgrepl_commit\t%s%s\n' "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    "$([ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no -- crates Cargo.toml Cargo.lock 2>/dev/null)" ] && echo ' (with uncommitted changes to the sources)')"
  printf 'pgrepl_binary\t%s\n' "$(date -u -r "$PGREPL" '+built %Y-%m-%d %H:%M UTC')"
  printf 'load_at_start\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
  printf 'pgbench_scale\t%s\n' "$SCALE"
  printf 'run_seconds\t%s\n' "$RUN_SECONDS"
  printf 'steal_max\t%s\n' "$STEAL_MAX"
  printf 'idle_max\t%s\n' "$IDLE_MAX"
  printf 'repeats\t%s\n' "$REPEATS"
  printf 'clients\t%s\n' "$CLIENTS"
  printf 'modes\t%s\n' "$MODES"
  printf 'shared_buffers\t%s\n' "$(psql_direct 'show shared_buffers')"
  printf 'max_connections\t%s\n' "$(psql_direct 'show max_connections')"
  printf 'synchronous_commit\t%s\n' "$(psql_direct 'show synchronous_commit')"
  printf 'synchronous_standby_names\t%s\n' "$(psql_direct 'show synchronous_standby_names')"
  printf 'ssl\t%s\n' "$(psql_direct 'show ssl')"
} >"$OUT/machine.tsv"

# ---- one run ----------------------------------------------------------------------------------
# snapshot FILE: CPU counters of the proxies, the primary's and the replica's PostgreSQL, the machine.
snapshot() {
  python3 "$ROOT/bench/procstat.py" snapshot "router=$(router_pid)" "copyrouter=$COPY_PID" "haproxy=$HAPROXY_PID" \
    --tree "primary=$(member_pid "$PRIMARY_NAME")" --tree "replica=$(member_pid "$REPLICA_NAME")" >"$1"
}

SEQ=0
printf 'seq\tpass\tmode\tclients\ttarget\tt0\tt1\tload\tidle_before\tidle_waited_s\tsteal_pct\trouter_pid\trouter_pid_after\thaproxy_alive\tok\ttps\tlatency_ms\ttxns\tfailed\tpgbench_cpu_s\n' >"$OUT/runs.tsv"

# run_case PASS MODE CLIENTS TARGET [warmup]: one run, redone (up to RETRIES times) when the
# hypervisor stole more than STEAL_MAX % of the CPUs during it.
run_case() {
  local attempt
  for attempt in $(seq 0 "$RETRIES"); do
    run_once "$@"
    [ "$OK" = disturbed ] || return 0
  done
  log "  still disturbed after $RETRIES retries; going on without this run"
}

# run_once PASS MODE CLIENTS TARGET [warmup]: sets OK (1, 0, warmup or disturbed).
run_once() {
  local pass=$1 mode=$2 c=$3 target=$4 port flag id ok=1 t0 t1 rp rp_after ha_alive=1 tps lat txns failed cpu steal
  case $target in
    direct) port=$PRIMARY_PORT ;;
    pgrepl) port=$RW_PORT ;;
    copy) port=$COPY_PORT ;;
    haproxy) port=$HA_PORT ;;
  esac
  case $mode in
    select-only) flag=-S ;;
    simple-update) flag=-N ;;
  esac
  SEQ=$((SEQ + 1))
  id=$(printf '%03d-%s-%s-c%s' "$SEQ" "$mode" "$target" "$c")
  [ -n "${5:-}" ] && id="$id-warmup"
  # Same footing for every run: no dirty buffers or pages left over from the one before.
  psql_direct CHECKPOINT
  sync
  wait_idle
  kill -0 "$HAPROXY_PID" 2>/dev/null || ha_alive=0
  rp=$(router_pid)
  local load
  load=$(cut -d' ' -f1 /proc/loadavg)
  snapshot "$OUT/runs/$id.before.json"
  t0=$(now)
  PGPASSWORD="$(secret "$D" admin)" python3 "$ROOT/bench/procstat.py" rusage "$OUT/runs/$id.pgbench-cpu" -- \
    "$PG_BIN/pgbench" -h 127.0.0.1 -p "$port" -U postgres -T "$RUN_SECONDS" -c "$c" -j "$(( c < 2 ? c : 2 ))" "$flag" postgres \
    >"$OUT/runs/$id.out" 2>&1 || ok=0
  t1=$(now)
  sleep 0.3 # the backends exit and are reaped, so their CPU is in the postmaster's cutime
  snapshot "$OUT/runs/$id.after.json"
  rp_after=$(router_pid)
  tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$OUT/runs/$id.out")
  lat=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' "$OUT/runs/$id.out")
  txns=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$OUT/runs/$id.out")
  failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$OUT/runs/$id.out")
  cpu=$(cat "$OUT/runs/$id.pgbench-cpu" 2>/dev/null || echo -)
  [ -n "$tps" ] && [ -n "$txns" ] || ok=0
  [ "${failed:-0}" = 0 ] || ok=0
  steal=$(steal_of_run "$OUT/runs/$id")
  [ "$ok" = 1 ] && [ "$steal" -gt "$STEAL_MAX" ] && ok=disturbed
  [ -n "${5:-}" ] && ok=warmup
  OK=$ok
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$id" "$pass" "$mode" "$c" "$target" "$t0" "$t1" \
    "$load" "$IDLE" "$IDLE_WAITED" "$steal" "$rp" "$rp_after" "$ha_alive" "$ok" "${tps:--}" "${lat:--}" "${txns:--}" "${failed:--}" "$cpu" >>"$OUT/runs.tsv"
  log "  $mode c=$c $target: tps ${tps:-?}, latency ${lat:-?} ms, ok=$ok (before: ${IDLE%/*}% busy, ${IDLE#*/}% stolen, waited ${IDLE_WAITED}s; during: ${steal}% stolen)"
  [ "$ok" != 0 ] || log "  run failed; see $OUT/runs/$id.out"
}

# ---- the matrix -------------------------------------------------------------------------------------
wait_for_quiet
printf 'load_before_warmup\t%s (waited %ss)\n' "$LOAD" "$LOAD_WAITED" >>"$OUT/machine.tsv"
[ "$MATRIX" = 1 ] || REPEATS=0
[ "$MATRIX" = 1 ] && log "warm-up (not counted): select-only, 8 clients, direct, ${RUN_SECONDS}s (load $LOAD)"
[ "$MATRIX" = 1 ] && run_case 0 select-only 8 direct warmup
g=0
for pass in $(seq 1 "$REPEATS"); do
  # (no load-average wait here: it would mostly measure our own previous runs; wait_idle, before
  # each run, looks at the CPUs directly)
  log "pass $pass/$REPEATS"
  for mode in $MODES; do
    for c in $CLIENTS; do
      # rotate the order of the targets from one (mode, clients) group and pass to the next
      for k in $(seq 0 $(( ${#TARGETS[@]} - 1 ))); do
        run_case "$pass" "$mode" "$c" "${TARGETS[$(( (g + pass - 1 + k) % ${#TARGETS[@]} ))]}"
      done
      g=$((g + 1))
    done
  done
done

# ---- the idle row ------------------------------------------------------------------------------
# cpu_ms_per_s PID SECONDS: PID's CPU over the next SECONDS, in ms per second of wall time.
cpu_ms_per_s() {
  local a b t0 t1
  a=$(ticks "$1"); t0=$(now)
  sleep "$2"
  b=$(ticks "$1"); t1=$(now)
  awk -v a="$a" -v b="$b" -v t0="$t0" -v t1="$t1" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { printf "%.2f\n", (b - a) / hz * 1000 / (t1 - t0) }'
}

# established PORT: TCP connections established to 127.0.0.1:PORT.
established() { ss -Htn state established "( dport = :$1 )" | wc -l; }

# idle_case TARGET: IDLE_CONNECTIONS idle connections through TARGET's proxy; one line of idle.tsv.
idle_case() {
  local target=$1 port pid base with open t_open start
  case $target in
    pgrepl) port=$RW_PORT; pid=$(router_pid) ;;
    copy) port=$COPY_PORT; pid=$COPY_PID ;;
    haproxy) port=$HA_PORT; pid=$HAPROXY_PID ;;
  esac
  wait_idle
  base=$(cpu_ms_per_s "$pid" "$IDLE_WINDOW")
  # Each client connects, then only sleeps: nothing crosses its connection until pgbench ends.
  printf '\\sleep 1 s\n' >"$WORK/idle.sql"
  start=$SECONDS
  PGPASSWORD="$(secret "$D" admin)" "$PG_BIN/pgbench" -n -h 127.0.0.1 -p "$port" -U postgres \
    -c "$IDLE_CONNECTIONS" -j 2 -T $(( IDLE_WINDOW + 120 )) -f "$WORK/idle.sql" postgres \
    >"$OUT/idle-$target.out" 2>&1 &
  IDLE_PID=$!
  while open=$(established "$port"); (( open < IDLE_CONNECTIONS )); do
    kill -0 "$IDLE_PID" 2>/dev/null || { log "  idle $target: pgbench ended with $open connections; see $OUT/idle-$target.out"; break; }
    (( SECONDS - start < 100 )) || { log "  idle $target: only $open connections after 100 s"; break; }
    sleep 0.5
  done
  t_open=$((SECONDS - start))
  sleep 3 # past the connections' start (and any per-connection check backing off to its slowest)
  open=$(established "$port")
  with=$(cpu_ms_per_s "$pid" "$IDLE_WINDOW")
  open_after=$(established "$port")
  kill -INT "$IDLE_PID" 2>/dev/null || true
  wait "$IDLE_PID" 2>/dev/null || true
  IDLE_PID=
  # the backends exit before the next target's figures
  for _ in $(seq 60); do (( $(established "$port") == 0 )) && break; sleep 0.5; done
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "$pid" "$IDLE_CONNECTIONS" "$open" "$open_after" \
    "$t_open" "$IDLE_WINDOW" "$base" "$with" >>"$OUT/idle.tsv"
  log "  idle $target: ${base} ms/s with no connections, ${with} ms/s with $open idle ones (open after: $open_after)"
}

if (( IDLE_CONNECTIONS > 0 )); then
  log "idle row: $IDLE_CONNECTIONS idle connections through each proxy, CPU over ${IDLE_WINDOW}s"
  printf 'target\tpid\tconnections\topen\topen_after\tseconds_to_open\twindow_s\tms_per_s_none\tms_per_s_idle\n' >"$OUT/idle.tsv"
  for target in pgrepl copy haproxy; do idle_case "$target"; done
fi

cp "$D/router.log" "$OUT/router.log" 2>/dev/null || true
cp "$D/members/$PRIMARY_NAME/member.log" "$OUT/primary-$PRIMARY_NAME.log" 2>/dev/null || true

# ---- report -------------------------------------------------------------------------------------
doc_args=()
[ "$WRITE_DOC" = 1 ] && doc_args=(--doc "$ROOT/docs/benchmarks.md")
python3 "$ROOT/bench/router_report.py" "$OUT" "${doc_args[@]}"
log "done; raw results in $OUT"
