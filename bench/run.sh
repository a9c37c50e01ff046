#!/usr/bin/env bash
# pgrepl benchmarks (see docs/benchmarks.md):
#   1. time to ready: `pgrepl up --replicas 2` on a fresh directory, until it returns;
#   2. adding a replica to a primary holding ~1 GB: `pgrepl scale 1` against a plain
#      `pg_basebackup -X stream -c fast` of the same primary, alternated;
#   then, unless BENCH_ROUTER=0, bench/router.sh (the router against direct and HAProxy), which
#   keeps its own raw results and section of docs/benchmarks.md.
# Raw results go to bench/results/<UTC timestamp>/; the figures replace the results section of
# docs/benchmarks.md (between the bench:results markers) and are printed.
#
# Usage (as root, like pgrepl's other commands on this machine):  bash bench/run.sh   (or: make bench)
# Knobs (environment):
#   BENCH_UP_TRIALS=5        trials of benchmark 1
#   BENCH_SCALE_TRIALS=3     trials of each side of benchmark 2
#   BENCH_PGBENCH_SCALE=68   pgbench -i scale factor (68 gives about 1 GB)
#   BENCH_LOAD_MAX=1.0       wait before each trial until the 1-minute load average is below this...
#   BENCH_LOAD_WAIT=60       ...for at most this many seconds, then go on (the load is recorded)
#   BENCH_WRITE_DOC=1        0: only print the markdown, leave docs/benchmarks.md alone
#   BENCH_BUILD=1            0: use target/release/pgrepl as it is (the recorded commit may then not match it)
#   BENCH_ROUTER=1           0: skip bench/router.sh (its own knobs: see its header)
#   PG_BIN=/usr/lib/postgresql/15/bin
# Passwords are read from the cluster's secrets.json into the environment of the one client
# process that needs them; they are never printed or put on a command line.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PGREPL=$ROOT/target/release/pgrepl
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
UP_TRIALS=${BENCH_UP_TRIALS:-5}
SCALE_TRIALS=${BENCH_SCALE_TRIALS:-3}
PGBENCH_SCALE=${BENCH_PGBENCH_SCALE:-68}
LOAD_MAX=${BENCH_LOAD_MAX:-1.0}
LOAD_WAIT=${BENCH_LOAD_WAIT:-60}
WRITE_DOC=${BENCH_WRITE_DOC:-1}

log() { printf '[bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (pgrepl switches to the postgres OS user itself; the baseline runs pg_basebackup through runuser)"
id postgres >/dev/null 2>&1 || die "no OS user postgres (run scripts/setup.sh)"
for b in pgbench psql pg_basebackup postgres; do [ -x "$PG_BIN/$b" ] || die "$PG_BIN/$b not found (set PG_BIN)"; done
# Build (a no-op when the binary is up to date), so the commit recorded below is the one measured.
if [ "${BENCH_BUILD:-1}" = 1 ] || [ ! -x "$PGREPL" ]; then
  log "building pgrepl (release)"
  (cd "$ROOT" && cargo build --release --bin pgrepl --quiet) || die "cargo build failed"
fi

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$ROOT/bench/results/$STAMP
mkdir -p "$OUT"
# Cluster directories live here: reachable by the postgres user, short enough for unix sockets.
WORK=$(mktemp -d /tmp/pgrepl-bench.XXXXXX)
chown postgres:postgres "$WORK"
chmod 0755 "$WORK"
log "raw results: $OUT; scratch: $WORK"

# now, wait_for_quiet, destroy_cluster, secret: shared with the other benchmark scripts.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ---- cleanup, also on failure or interrupt ---------------------------------------------------
cleanup() {
  local rc=$? d keep=0
  trap - EXIT INT TERM
  for d in "$WORK"/*; do
    [ -e "$d/pgrepl.toml" ] || continue
    destroy_cluster "$d" || keep=1
  done
  if [ "$keep" -eq 0 ]; then rm -rf "$WORK"; fi
  [ "$rc" -eq 0 ] || log "failed (exit $rc); partial raw results in $OUT"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- helpers ----------------------------------------------------------------------------------


# check_status DIR REPLICAS: prints the replica names when the cluster has a running primary and
# exactly REPLICAS streaming replicas; fails otherwise.
check_status() {
  "$PGREPL" --dir "$1" status --json | python3 -c '
import json, sys
want = int(sys.argv[1])
s = json.load(sys.stdin)
m = s["members"]
prim = [x for x in m if x["role"] == "primary" and x["state"] == "running"]
reps = [x for x in m if x["role"] == "replica" and x["state"] == "streaming"]
if len(prim) != 1 or len(reps) != want or len(m) != want + 1:
    sys.exit("unexpected members: " + ", ".join(" ".join((x["name"], x["role"], x["state"])) for x in m))
print(" ".join(x["name"] for x in reps))
' "$2"
}

# ---- machine ----------------------------------------------------------------------------------
{
  printf 'date_utc\t%s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
  printf 'nproc\t%s\n' "$(nproc)"
  printf 'cpu\t%s\n' "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
  printf 'memory\t%s\n' "$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
  printf 'kernel\t%s\n' "$(uname -r)"
  printf 'postgres\t%s\n' "$("$PG_BIN/postgres" --version)"
  printf 'fs_tmp\t%s\n' "$(df -PT /tmp | awk 'NR == 2 { print $2 " on " $1 }')"
  printf 'pgrepl_commit\t%s%s\n' "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    "$([ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no -- crates Cargo.toml Cargo.lock 2>/dev/null)" ] && echo ' (with uncommitted changes to the sources)')"
  printf 'pgrepl_binary\t%s\n' "$(date -u -r "$PGREPL" '+built %Y-%m-%d %H:%M UTC')"
  printf 'load_at_start\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
} >"$OUT/machine.tsv"

# ---- 1. time to ready -------------------------------------------------------------------------
printf 'trial\tt0\tt1\twall_s\tready_in_s\tload\tload_waited_s\tok\n' >"$OUT/up.tsv"
for i in $(seq 1 "$UP_TRIALS"); do
  wait_for_quiet
  d=$WORK/up-$i
  log "up trial $i/$UP_TRIALS (load $LOAD)"
  ok=1
  t0=$(now)
  "$PGREPL" --dir "$d" up --replicas 2 >"$OUT/up-$i.out" 2>&1 || ok=0
  t1=$(now)
  ready_in=$(sed -n 's/.* is ready in \([0-9.]*\) s.*/\1/p' "$OUT/up-$i.out" | head -1)
  if [ "$ok" -eq 1 ]; then check_status "$d" 2 >/dev/null 2>>"$OUT/up-$i.out" || ok=0; fi
  wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$i" "$t0" "$t1" "$wall" "${ready_in:--}" "$LOAD" "$LOAD_WAITED" "$ok" >>"$OUT/up.tsv"
  log "  wall ${wall}s, pgrepl says ${ready_in:-?}s, ok=$ok"
  mkdir -p "$OUT/up-$i-logs"
  cp "$d/supervisor.log" "$OUT/up-$i-logs/" 2>/dev/null || true
  for m in "$d"/members/*/; do [ -f "$m/member.log" ] && cp "$m/member.log" "$OUT/up-$i-logs/$(basename "$m").log"; done
  [ "$ok" -eq 1 ] || log "  trial $i failed; see $OUT/up-$i.out"
  "$PGREPL" --dir "$d" down --destroy >/dev/null
done

# ---- 2. add a replica to a primary holding ~1 GB ----------------------------------------------
d=$WORK/scale
log "scale benchmark: creating a primary without replicas"
"$PGREPL" --dir "$d" up --replicas 0 >"$OUT/scale-up.out" 2>&1 || die "up --replicas 0 failed; see $OUT/scale-up.out"
primary=$("$PGREPL" --dir "$d" endpoints --rw)
port=${primary##*:}
[[ $port =~ ^[0-9]+$ ]] || die "unexpected output of endpoints --rw: $primary"
primary_name=$(sed -n 's/^ *\(node-[0-9]*\) *primary .*/\1/p' "$OUT/scale-up.out" | head -1)
[ -n "$primary_name" ] || primary_name=node-1
log "loading pgbench scale $PGBENCH_SCALE into the primary at 127.0.0.1:$port (database postgres)"
t0=$(now)
PGPASSWORD="$(secret "$d" admin)" "$PG_BIN/pgbench" -i -q -s "$PGBENCH_SCALE" -h 127.0.0.1 -p "$port" -U postgres postgres \
  >"$OUT/pgbench-init.out" 2>&1 || die "pgbench -i failed; see $OUT/pgbench-init.out"
PGPASSWORD="$(secret "$d" admin)" "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -c CHECKPOINT
t1=$(now)
sizes=$(PGPASSWORD="$(secret "$d" admin)" "$PG_BIN/psql" -X -At -F $'\t' -h 127.0.0.1 -p "$port" -U postgres -d postgres -c \
  "select pg_database_size('postgres'), (select sum(pg_database_size(oid)) from pg_database)")
{
  printf 'pgbench_scale\t%s\n' "$PGBENCH_SCALE"
  printf 'load_seconds\t%s\n' "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')"
  printf 'db_postgres_bytes\t%s\n' "$(cut -f1 <<<"$sizes")"
  printf 'all_databases_bytes\t%s\n' "$(cut -f2 <<<"$sizes")"
  printf 'primary_port\t%s\n' "$port"
} >"$OUT/dataset.tsv"
log "loaded: $(cut -f1 <<<"$sizes") bytes in database postgres, $(cut -f2 <<<"$sizes") in all databases"

printf 'kind\ttrial\tt0\tt1\twall_s\tload\tload_waited_s\tmember\tcopied_bytes\tscale0_s\tok\n' >"$OUT/scale.tsv"
for i in $(seq 1 "$SCALE_TRIALS"); do
  # (a) pgrepl scale 1, until the new replica streams
  wait_for_quiet
  log "scale trial $i/$SCALE_TRIALS: pgrepl scale 1 (load $LOAD)"
  ok=1
  t0=$(now)
  "$PGREPL" --dir "$d" scale 1 >"$OUT/scale-$i.out" 2>&1 || ok=0
  t1=$(now)
  member=-
  if [ "$ok" -eq 1 ]; then member=$(check_status "$d" 1 2>>"$OUT/scale-$i.out") || { ok=0; member=-; }; fi
  copied=-
  [ "$member" != - ] && copied=$(du -sb "$d/members/$member/data" | cut -f1)
  wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
  log "  wall ${wall}s (member $member, data dir $copied bytes), ok=$ok"
  # back to no replica; removal keeps the member's directory: delete it once its postgres stopped
  s0=$(now)
  "$PGREPL" --dir "$d" scale 0 >"$OUT/scale0-$i.out" 2>&1 || die "scale 0 failed; see $OUT/scale0-$i.out"
  s1=$(now)
  scale0=$(awk -v a="$s0" -v b="$s1" 'BEGIN { printf "%.3f", b - a }')
  printf 'pgrepl\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$i" "$t0" "$t1" "$wall" "$LOAD" "$LOAD_WAITED" "$member" "$copied" "$scale0" "$ok" >>"$OUT/scale.tsv"
  [ "$ok" -eq 1 ] || die "scale 1 failed; see $OUT/scale-$i.out"
  [ -f "$d/members/$member/member.log" ] && cp "$d/members/$member/member.log" "$OUT/scale-$i-$member.log"
  for _ in $(seq 1 60); do [ -e "$d/members/$member/data/postmaster.pid" ] || break; sleep 0.5; done
  [ -e "$d/members/$member/data/postmaster.pid" ] && die "the removed member $member still runs PostgreSQL 30 s after scale 0"
  rm -rf "${d:?}/members/$member"

  # (b) baseline: a plain pg_basebackup of the same primary, as the postgres OS user
  wait_for_quiet
  log "scale trial $i/$SCALE_TRIALS: pg_basebackup (load $LOAD)"
  b=$WORK/basebackup-$i
  install -d -o postgres -g postgres -m 0700 "$b"
  ok=1
  t0=$(now)
  PGPASSWORD="$(secret "$d" replication)" runuser -u postgres -- "$PG_BIN/pg_basebackup" -D "$b" \
    -h 127.0.0.1 -p "$port" -U replicator -X stream -c fast --no-password >"$OUT/basebackup-$i.out" 2>&1 || ok=0
  t1=$(now)
  copied=$(du -sb "$b" | cut -f1)
  wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
  printf 'pg_basebackup\t%s\t%s\t%s\t%s\t%s\t%s\t-\t%s\t-\t%s\n' "$i" "$t0" "$t1" "$wall" "$LOAD" "$LOAD_WAITED" "$copied" "$ok" >>"$OUT/scale.tsv"
  log "  wall ${wall}s ($copied bytes), ok=$ok"
  rm -rf "$b"
  [ "$ok" -eq 1 ] || die "pg_basebackup failed; see $OUT/basebackup-$i.out"
done
cp "$d/members/$primary_name/member.log" "$OUT/scale-primary-$primary_name.log" 2>/dev/null || true
cp "$d/supervisor.log" "$OUT/scale-supervisor.log" 2>/dev/null || true
log "destroying the scale benchmark's cluster"
"$PGREPL" --dir "$d" down --destroy >/dev/null

# ---- report -------------------------------------------------------------------------------------
doc_args=()
[ "$WRITE_DOC" = 1 ] && doc_args=(--doc "$ROOT/docs/benchmarks.md")
python3 "$ROOT/bench/report.py" "$OUT" "${doc_args[@]}"
log "done; raw results in $OUT"

# ---- 3. the router (its own script, raw results and doc section) ------------------------------------
if [ "${BENCH_ROUTER:-1}" = 1 ]; then
  BENCH_BUILD=0 bash "$ROOT/bench/router.sh"
fi
