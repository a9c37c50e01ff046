#!/usr/bin/env bash
# No false failover under load (docs/benchmarks.md, "No false failover under load"): a local
# 3-member cluster at pgrepl's defaults takes `pgbench` simple-update load through its rw
# endpoint for BENCH_SOAK_SECONDS (default 600); the leader, its timeline and the fence must not
# move, and pgbench must see no failed transaction. Samples the leader every second.
#
# Usage (as root):  bash bench/soak.sh
# Knobs: BENCH_SOAK_SECONDS=600  BENCH_SOAK_CLIENTS=8  BENCH_SOAK_SCALE=10  BENCH_BUILD=1
#        PG_BIN=/usr/lib/postgresql/15/bin
# The admin password goes from secrets.json into the environment of pgbench alone.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PGREPL=$ROOT/target/release/pgrepl
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
SECONDS_LOAD=${BENCH_SOAK_SECONDS:-600}
CLIENTS=${BENCH_SOAK_CLIENTS:-8}
SCALE=${BENCH_SOAK_SCALE:-10}

log() { printf '[bench-soak %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root (pgrepl switches to the postgres OS user itself)"

if [ "${BENCH_BUILD:-1}" = 1 ]; then (cd "$ROOT" && cargo build --release --bin pgrepl -q); fi
OUT=$ROOT/bench/results/$(date -u +%Y%m%dT%H%M%SZ)-soak
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/pgrepl-soak.XXXXXX)
chmod 755 "$WORK"
cp "$PGREPL" "$WORK/pgrepl"
PGREPL=$WORK/pgrepl  # the copy the postgres OS user can execute
DIR=$WORK/c
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
RW=$(free_port); RO=$(free_port)
# destroy_cluster: shared with the other benchmark scripts.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cleanup() { if [ ! -e "$DIR/pgrepl.toml" ] || destroy_cluster "$DIR"; then rm -rf "$WORK"; fi; }
trap cleanup EXIT INT TERM

"$PGREPL" --dir "$DIR" up --replicas 2 --port "$RW" --ro-port "$RO" >"$OUT/up.txt"
status() { "$PGREPL" --dir "$DIR" status --json; }
leader_tl() { status | python3 -c 'import json,sys; s=json.load(sys.stdin); l=s["leader"]; m=[x for x in s["members"] if x["name"]==l][0]; print(l, m["timeline"])'; }
export PGPASSWORD
PGPASSWORD=$(python3 -c "import json; print(json.load(open('$DIR/secrets.json'))['admin'])")
conn="host=127.0.0.1 port=$RW user=postgres dbname=postgres"
"$PG_BIN/pgbench" -q -i -s "$SCALE" "$conn" >"$OUT/init.txt" 2>&1
start=$(leader_tl)
log "leader and timeline before: $start; ${SECONDS_LOAD}s of pgbench -N -c $CLIENTS through rw"
"$PG_BIN/pgbench" -N -c "$CLIENTS" -j 2 -T "$SECONDS_LOAD" -P 60 "$conn" >"$OUT/pgbench.txt" 2>&1 &
bench=$!
changes=0
while kill -0 "$bench" 2>/dev/null; do
  now=$(leader_tl 2>/dev/null || echo "unknown")
  if [ "$now" != "$start" ]; then changes=$((changes + 1)); log "leader/timeline now: $now"; fi
  echo "$(date -u +%H:%M:%S) $now" >>"$OUT/leader.txt"
  sleep 1
done
wait "$bench" || true
end=$(leader_tl)
tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$OUT/pgbench.txt" | head -1)
failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$OUT/pgbench.txt")
fenced=$(cat "$DIR"/members/*/member.log | grep -c "fencing:" || true)
renew_failures=$(cat "$DIR"/members/*/member.log | grep -c "renew the leader lease" || true)
{
  echo "seconds=$SECONDS_LOAD clients=$CLIENTS scale=$SCALE"
  echo "leader_before=$start leader_after=$end samples_with_other_leader=$changes"
  echo "tps=$tps failed_transactions=${failed:-0} fence_events=$fenced lease_renewal_failures=$renew_failures"
} | tee "$OUT/summary.txt"
[ "$start" = "$end" ] && [ "$changes" = 0 ] && [ "$fenced" = 0 ] || { log "FALSE FAILOVER (see $OUT)"; exit 1; }
log "no false failover; results in $OUT"
