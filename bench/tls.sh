#!/usr/bin/env bash
# pgrepl TLS benchmark (see docs/benchmarks.md, "TLS cost"; issue 13, section Benchmark):
#   one `pgrepl up --replicas 1` cluster with TLS on (the default), and pgbench against it with
#   and without TLS on the client side (PGSSLMODE=verify-full against the cluster CA, or
#   PGSSLMODE=disable): select-only (-S) and simple-update (-N) at 8 clients, and connection
#   set-up (-S -C: a new connection per transaction), each direct to the primary's port and
#   through the rw endpoint (the router, which passes TLS through). Same server, same data: with
#   `listen` on loopback `require_tls` is off, so plain and TLS clients both get in.
#   Plain and TLS runs alternate within each (mode, target), in an order that flips from one
#   group and trial to the next; the figures are medians over the trials.
#   Per run: TPS, average latency (and with -C pgbench's average connection time), and the
#   machine's busy and stolen CPU time from /proc/stat.
# Raw results go to bench/results/<UTC timestamp>-tls/; the figures replace the text between the
# bench:tls markers of docs/benchmarks.md and are printed.
#
# Usage (as root, like pgrepl's other commands on this machine):  bash bench/tls.sh  (or make bench-tls)
# Knobs (environment):
#   BENCH_TLS_SECONDS=20           pgbench -T of the -S and -N runs
#   BENCH_TLS_CONNECT_SECONDS=10   pgbench -T of the -C runs
#   BENCH_TLS_TRIALS=3             runs of each (mode, target, TLS); figures are medians over them
#   BENCH_TLS_CLIENTS=8            -c N -j min(N,2)
#   BENCH_TLS_MODES="select-only simple-update connect"
#   BENCH_TLS_SCALE=10             pgbench -i scale factor
#   BENCH_IDLE_MAX=20              before each run, wait until the machine's busy + stolen time over 2 s
#   BENCH_IDLE_WAIT=60             is below this % of all CPUs, for at most this many seconds (recorded)
#   BENCH_STEAL_MAX=10             a run during which the hypervisor stole more than this % of the CPUs
#   BENCH_RETRIES=1                is recorded as disturbed and redone, up to this many times
#   BENCH_LOAD_MAX=1.0             before starting, wait until the 1-minute load average is below
#   BENCH_LOAD_WAIT=60             this, for at most this many seconds (then go on; recorded)
#   BENCH_OTHER_WAIT=1800          before starting, wait (at most this many seconds, then fail) while
#                                  another benchmark runs (pgrep -f 'wrk|bench/api.sh|bench/run.sh|bench/router.sh')
#   BENCH_WRITE_DOC=1              0: only print the markdown, leave docs/benchmarks.md alone
#   BENCH_BUILD=1                  0: use target/release/pgrepl as it is
#   PG_BIN=/usr/lib/postgresql/15/bin
# The admin password is read from the cluster's secrets.json into the environment of the one
# client process that needs it; it is never printed or put on a command line.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PGREPL=$ROOT/target/release/pgrepl
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
RUN_SECONDS=${BENCH_TLS_SECONDS:-20}
CONNECT_SECONDS=${BENCH_TLS_CONNECT_SECONDS:-10}
TRIALS=${BENCH_TLS_TRIALS:-3}
CLIENTS=${BENCH_TLS_CLIENTS:-8}
MODES=${BENCH_TLS_MODES:-select-only simple-update connect}
SCALE=${BENCH_TLS_SCALE:-10}
IDLE_MAX=${BENCH_IDLE_MAX:-20}
IDLE_WAIT=${BENCH_IDLE_WAIT:-60}
STEAL_MAX=${BENCH_STEAL_MAX:-10}
RETRIES=${BENCH_RETRIES:-1}
LOAD_MAX=${BENCH_LOAD_MAX:-1.0}
LOAD_WAIT=${BENCH_LOAD_WAIT:-60}
OTHER_WAIT=${BENCH_OTHER_WAIT:-1800}
WRITE_DOC=${BENCH_WRITE_DOC:-1}
OTHER_BENCH='wrk|bench/api.sh|bench/run.sh|bench/router.sh'
TARGETS=(direct rw)

log() { printf '[bench-tls %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (pgrepl switches to the postgres OS user itself)"
id postgres >/dev/null 2>&1 || die "no OS user postgres (run scripts/setup.sh)"
for b in pgbench psql; do [ -x "$PG_BIN/$b" ] || die "$PG_BIN/$b not found (set PG_BIN)"; done
for m in $MODES; do case $m in select-only|simple-update|connect) ;; *) die "unknown mode $m";; esac; done
# Build (a no-op when the binary is up to date), so the commit recorded below is the one measured.
if [ "${BENCH_BUILD:-1}" = 1 ] || [ ! -x "$PGREPL" ]; then
  log "building pgrepl (release)"
  (cd "$ROOT" && cargo build --release --bin pgrepl --quiet) || die "cargo build failed"
fi

# Not at the same time as another benchmark: both would measure the other.
other_waited=0
while pgrep -f "$OTHER_BENCH" >/dev/null; do
  (( other_waited == 0 )) && log "another benchmark is running ($(pgrep -f "$OTHER_BENCH" | head -3 | tr '\n' ' ')); waiting"
  (( other_waited >= OTHER_WAIT )) && die "another benchmark still runs after ${OTHER_WAIT}s"
  sleep 5
  other_waited=$((other_waited + 5))
done

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$ROOT/bench/results/$STAMP-tls
mkdir -p "$OUT/runs"
# The cluster directory lives here: reachable by the postgres user, short enough for unix sockets.
WORK=$(mktemp -d /tmp/pgrepl-bench-tls.XXXXXX)
chown postgres:postgres "$WORK"
chmod 0755 "$WORK"
D=$WORK/cluster
log "raw results: $OUT; scratch: $WORK"

# now, wait_for_quiet, destroy_cluster, free_ports, secret: shared with the other benchmark scripts.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ---- cleanup, also on failure or interrupt ---------------------------------------------------
cleanup() {
  local rc=$? keep=0
  trap - EXIT INT TERM
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
  cpu_delta "$a" "$b"
}

# cpu_delta A B: "busy% steal% busy_ticks" between two "cpu" lines of /proc/stat.
cpu_delta() {
  awk -v a="$1" -v b="$2" 'BEGIN {
    n = split(a, x); split(b, y); total = 0
    for (i = 2; i <= 9 && i <= n; i++) total += y[i] - x[i]   # user..steal (guest is within user)
    idle = (y[5] - x[5]) + (y[6] - x[6]); steal = y[9] - x[9]
    if (total <= 0) total = 1
    printf "%.0f %.1f %d\n", 100 * (total - idle - steal) / total, 100 * steal / total, total - idle - steal
  }'
}

# Before each run: wait until the machine (our idle cluster included) is quiet: busy + stolen
# time over a 2-s window below IDLE_MAX % of all CPUs, for at most IDLE_WAIT seconds, then go on.
# Sets IDLE (the last window's "busy/steal") and IDLE_WAITED (seconds).
wait_idle() {
  local start=$SECONDS busy steal _
  while :; do
    read -r busy steal _ <<<"$(cpu_window 2)"
    awk -v b="$busy" -v s="$steal" -v m="$IDLE_MAX" 'BEGIN { exit !(b + s < m) }' && break
    if (( SECONDS - start >= IDLE_WAIT )); then
      log "  machine still busy (${busy}% busy, ${steal}% stolen) after ${IDLE_WAIT}s; going on (recorded)"
      break
    fi
  done
  IDLE="$busy/$steal"
  IDLE_WAITED=$((SECONDS - start))
}



# as_client TLS CMD...: runs CMD as a libpq client with the admin password in its environment
# and, for TLS "tls", verify-full against the cluster CA, for "plain" no TLS at all. GSSAPI
# encryption is off for both, so neither first tries (and fails) a GSS handshake.
as_client() {
  local tls=$1
  shift
  case $tls in
    tls) PGPASSWORD="$(secret "$D" admin)" PGSSLMODE=verify-full PGSSLROOTCERT="$D/ca.crt" PGGSSENCMODE=disable "$@" ;;
    plain) PGPASSWORD="$(secret "$D" admin)" PGSSLMODE=disable PGGSSENCMODE=disable "$@" ;;
    *) die "as_client: unknown TLS setting $tls" ;;
  esac
}

# psql_at TLS PORT SQL: runs SQL as the admin user.
psql_at() { as_client "$1" "$PG_BIN/psql" -X -q -At -h 127.0.0.1 -p "$2" -U postgres -d postgres -c "$3"; }
psql_direct() { psql_at plain "$PRIMARY_PORT" "$1"; }

# ---- the cluster, the data ----------------------------------------------------------------------
read -r RW_PORT RO_PORT <<<"$(free_ports 2)"
log "starting a primary and a replica (TLS on, the default); rw endpoint 127.0.0.1:$RW_PORT, ro 127.0.0.1:$RO_PORT"
"$PGREPL" --dir "$D" up --replicas 1 --port "$RW_PORT" --ro-port "$RO_PORT" >"$OUT/up.out" 2>&1 \
  || die "pgrepl up failed; see $OUT/up.out"
[ -s "$D/ca.crt" ] || die "no cluster CA at $D/ca.crt (is TLS off?)"
PRIMARY=$("$PGREPL" --dir "$D" endpoints --rw)
PRIMARY_PORT=${PRIMARY##*:}
[[ $PRIMARY_PORT =~ ^[0-9]+$ ]] || die "unexpected output of endpoints --rw: $PRIMARY"
log "primary at $PRIMARY"

# Each path really is what it claims: the server's view of a TLS and a plain session, both ways.
[ "$(psql_direct 'show ssl')" = on ] || die "the primary's ssl is not on"
for t in direct rw; do
  port=$PRIMARY_PORT
  [ "$t" = rw ] && port=$RW_PORT
  s=$(psql_at tls "$port" "select format('%s %s %s %s-bit', ssl::text, version, cipher, bits) from pg_stat_ssl where pid = pg_backend_pid()") \
    || die "a verify-full connection ($t) failed"
  [[ $s == true\ * ]] || die "a verify-full connection ($t) is not TLS: $s"
  printf 'tls_session_%s\t%s\n' "$t" "$s" >>"$OUT/sessions.tsv"
  s=$(psql_at plain "$port" 'select ssl from pg_stat_ssl where pid = pg_backend_pid()') \
    || die "a plain connection ($t) failed (require_tls on?)"
  [ "$s" = f ] || die "a plain connection ($t) is TLS: $s"
done

log "loading pgbench scale $SCALE into the primary (database postgres)"
as_client plain "$PG_BIN/pgbench" -i -q -s "$SCALE" -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres postgres \
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
  printf 'openssl\t%s\n' "$(openssl version 2>/dev/null || echo unknown)"
  printf 'server_key\t%s\n' "$(openssl x509 -in "$(ls "$D"/members/*/tls/server.crt | head -1)" -noout -text 2>/dev/null | sed -n 's/^ *Public Key Algorithm: //p;s/^ *ASN1 OID: //p' | paste -sd' ')"
  printf 'tls_session_direct\t%s\n' "$(sed -n 's/^tls_session_direct\t//p' "$OUT/sessions.tsv")"
  printf 'tls_session_rw\t%s\n' "$(sed -n 's/^tls_session_rw\t//p' "$OUT/sessions.tsv")"
  printf 'ssl_min_protocol_version\t%s\n' "$(psql_direct 'show ssl_min_protocol_version')"
  printf 'password_encryption\t%s\n' "$(psql_direct 'show password_encryption')"
  printf 'router_mode\t%s\n' "$(grep -o "the kernel splices connections' bytes\|the router copies connections' bytes[^\"]*" "$D/router.log" | tail -1)"
  printf 'pgrepl_commit\t%s%s\n' "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    "$([ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no -- crates Cargo.toml Cargo.lock 2>/dev/null)" ] && echo ' (with uncommitted changes to the sources)')"
  printf 'pgrepl_binary\t%s\n' "$(date -u -r "$PGREPL" '+built %Y-%m-%d %H:%M UTC')"
  printf 'load_at_start\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
  printf 'other_bench_waited_s\t%s\n' "$other_waited"
  printf 'pgbench_scale\t%s\n' "$SCALE"
  printf 'run_seconds\t%s\n' "$RUN_SECONDS"
  printf 'connect_seconds\t%s\n' "$CONNECT_SECONDS"
  printf 'clients\t%s\n' "$CLIENTS"
  printf 'threads\t%s\n' "$(( CLIENTS < 2 ? CLIENTS : 2 ))"
  printf 'trials\t%s\n' "$TRIALS"
  printf 'steal_max\t%s\n' "$STEAL_MAX"
  printf 'idle_max\t%s\n' "$IDLE_MAX"
  printf 'clk_tck\t%s\n' "$(getconf CLK_TCK)"
  printf 'shared_buffers\t%s\n' "$(psql_direct 'show shared_buffers')"
  printf 'synchronous_commit\t%s\n' "$(psql_direct 'show synchronous_commit')"
} >"$OUT/machine.tsv"

# ---- one run ----------------------------------------------------------------------------------
SEQ=0
printf 'seq\ttrial\tmode\ttarget\ttls\tt0\tt1\tload\tidle_before\tidle_waited_s\tbusy_pct\tsteal_pct\tbusy_ticks\tother_bench\tok\ttps\tlatency_ms\tconnection_ms\ttxns\tfailed\n' >"$OUT/runs.tsv"

# run_case TRIAL MODE TARGET TLS [warmup]: one run, redone (up to RETRIES times) when the
# hypervisor stole more than STEAL_MAX % of the CPUs during it.
run_case() {
  local attempt
  for attempt in $(seq 0 "$RETRIES"); do
    run_once "$@"
    [ "$OK" = disturbed ] || return 0
  done
  log "  still disturbed after $RETRIES retries; going on without this run"
}

# run_once TRIAL MODE TARGET TLS [warmup]: sets OK (1, 0, warmup or disturbed).
run_once() {
  local trial=$1 mode=$2 target=$3 tls=$4 port flags secs id ok=1 t0 t1 a b load busy steal ticks other=no tps lat conn txns failed
  case $target in
    direct) port=$PRIMARY_PORT ;;
    rw) port=$RW_PORT ;;
  esac
  secs=$RUN_SECONDS
  case $mode in
    select-only) flags=(-S) ;;
    simple-update) flags=(-N) ;;
    connect) flags=(-S -C); secs=$CONNECT_SECONDS ;;
  esac
  SEQ=$((SEQ + 1))
  id=$(printf '%03d-%s-%s-%s' "$SEQ" "$mode" "$target" "$tls")
  [ -n "${5:-}" ] && id="$id-warmup"
  # Same footing for every run: no dirty buffers or pages left over from the one before.
  psql_direct CHECKPOINT
  sync
  wait_idle
  load=$(cut -d' ' -f1 /proc/loadavg)
  # another benchmark started meanwhile: the run still counts, but it is marked
  pgrep -f "$OTHER_BENCH" >/dev/null && other=yes
  t0=$(now)
  a=$(head -1 /proc/stat)
  as_client "$tls" "$PG_BIN/pgbench" -h 127.0.0.1 -p "$port" -U postgres -T "$secs" -c "$CLIENTS" -j "$(( CLIENTS < 2 ? CLIENTS : 2 ))" \
    "${flags[@]}" postgres >"$OUT/runs/$id.out" 2>&1 || ok=0
  b=$(head -1 /proc/stat)
  t1=$(now)
  pgrep -f "$OTHER_BENCH" >/dev/null && other=yes
  read -r busy steal ticks <<<"$(cpu_delta "$a" "$b")"
  tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$OUT/runs/$id.out")
  lat=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' "$OUT/runs/$id.out")
  conn=$(sed -n 's/^average connection time = \([0-9.]*\) ms/\1/p' "$OUT/runs/$id.out")
  txns=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$OUT/runs/$id.out")
  failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$OUT/runs/$id.out")
  [ -n "$tps" ] && [ -n "$txns" ] || ok=0
  [ "${failed:-0}" = 0 ] || ok=0
  [ "$ok" = 1 ] && awk -v s="$steal" -v m="$STEAL_MAX" 'BEGIN { exit !(s > m) }' && ok=disturbed
  [ -n "${5:-}" ] && ok=warmup
  OK=$ok
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$id" "$trial" "$mode" "$target" "$tls" "$t0" "$t1" \
    "$load" "$IDLE" "$IDLE_WAITED" "$busy" "$steal" "$ticks" "$other" "$ok" "${tps:--}" "${lat:--}" "${conn:--}" "${txns:--}" "${failed:--}" >>"$OUT/runs.tsv"
  log "  $mode $target $tls: tps ${tps:-?}, latency ${lat:-?} ms${conn:+, connection $conn ms}, ok=$ok (load $load; before: ${IDLE%/*}% busy, ${IDLE#*/}% stolen, waited ${IDLE_WAITED}s; during: ${busy}% busy, ${steal}% stolen; another benchmark running: $other)"
  [ "$ok" != 0 ] || log "  run failed; see $OUT/runs/$id.out"
}

# ---- the runs -----------------------------------------------------------------------------------
wait_for_quiet
printf 'load_before_warmup\t%s (waited %ss)\n' "$LOAD" "$LOAD_WAITED" >>"$OUT/machine.tsv"
log "warm-up (not counted): select-only, direct, TLS, ${RUN_SECONDS}s (load $LOAD)"
run_case 0 select-only direct tls warmup
g=0
for trial in $(seq 1 "$TRIALS"); do
  log "trial $trial/$TRIALS"
  for mode in $MODES; do
    for target in "${TARGETS[@]}"; do
      # plain and TLS back to back; which goes first flips from one group and trial to the next
      if (( (g + trial) % 2 == 0 )); then order=(plain tls); else order=(tls plain); fi
      for tls in "${order[@]}"; do run_case "$trial" "$mode" "$target" "$tls"; done
      g=$((g + 1))
    done
  done
done
printf 'load_at_end\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.tsv"

cp "$D/router.log" "$OUT/router.log" 2>/dev/null || true

# ---- report -------------------------------------------------------------------------------------
doc_args=()
[ "$WRITE_DOC" = 1 ] && doc_args=(--doc "$ROOT/docs/benchmarks.md")
python3 "$ROOT/bench/tls_report.py" "$OUT" "${doc_args[@]}"
log "done; raw results in $OUT"
