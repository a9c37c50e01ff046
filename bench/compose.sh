#!/usr/bin/env bash
# The HA compose cluster (examples/compose/ha; see docs/benchmarks.md, "HA compose cluster"),
# measured by crates/pgrepl/tests/bench_compose.rs (an #[ignore]d test, run here in release mode;
# its header says what each trial does), in async and in synchronous mode:
#   1. `make up` of a fresh project (empty volumes) to the first acknowledged write through the
#      published rw port, and to all three members streaming;
#   2. `docker kill` of the primary's container to the first acknowledged write through the rw
#      port (the end of the longest write gap), and the acknowledged ids missing on the new primary;
#   3. `docker stop` of the primary's container: the write gap, and the rows lost.
# The killed or stopped container is started again and the cluster converged between trials.
# Then, unless BENCH_COMPOSE_BASELINE=0, bench/failover.sh on this machine in the same run
# (BENCH_FAILOVER_SYSTEMS, default "pgrepl patroni-defaults": pgrepl's processes on one machine
# and Debian's Patroni at its defaults, ttl 30), for the comparison.
# Raw results go to bench/results/<UTC stamp>-compose/ (trials.jsonl: one line per trial;
# test.log: the test's output; machine.tsv; failover: the baseline's results directory); the
# summary (bench/compose_report.py) is printed, and with BENCH_PUBLISH=1 written into
# docs/benchmarks.md between the bench:compose markers.
#
# Usage (as root, with a Docker engine and docker-compose):  bash bench/compose.sh  (or: make bench-compose)
# Knobs (environment):
#   BENCH_COMPOSE_MODES="async sync"   PGREPL_SYNCHRONOUS=off / on
#   BENCH_COMPOSE_UP_TRIALS=5          fresh projects per mode (the last one serves the faults)
#   BENCH_COMPOSE_TRIALS=5             docker kill trials, and docker stop trials, per mode
#   BENCH_COMPOSE_TIMEOUT=60           seconds after the fault without a new primary = "no failover"
#   BENCH_COMPOSE_CONVERGE_TIMEOUT=180 seconds for the cluster to come up or converge again
#   BENCH_COMPOSE_BASELINE=1           0: skip bench/failover.sh; or a results directory of it to cite
#   BENCH_FAILOVER_SYSTEMS="pgrepl patroni-defaults" BENCH_FAILOVER_TRIALS=5 (and its other knobs)
#   BENCH_PUBLISH=0                    1: write the summary into docs/benchmarks.md
#   PGREPL_IMAGE=pgrepl:latest         the image; it is pinned for the run under a tag of its own
#                                      (pgrepl-bench-compose:<id>), so that a rebuild of
#                                      pgrepl:latest meanwhile does not change what is measured
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMAGE=${PGREPL_IMAGE:-pgrepl:latest}
MODES=${BENCH_COMPOSE_MODES:-async sync}
UP_TRIALS=${BENCH_COMPOSE_UP_TRIALS:-5}
TRIALS=${BENCH_COMPOSE_TRIALS:-5}
BASELINE=${BENCH_COMPOSE_BASELINE:-1}
PUBLISH=${BENCH_PUBLISH:-0}
log() { printf '[bench-compose %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (bench/failover.sh, the baseline, needs it)"
docker info >/dev/null 2>&1 || die "no Docker engine answers"
command -v docker-compose >/dev/null || die "no docker-compose (scripts/setup.sh installs Debian's)"
ID=$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null) || die "no image $IMAGE: run make image"
PIN=pgrepl-bench-compose:${ID#sha256:}
PIN=${PIN:0:40}
docker tag "$ID" "$PIN"
trap 'docker rmi "$PIN" >/dev/null 2>&1 || true' EXIT

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$ROOT/bench/results/$STAMP-compose
mkdir -p "$OUT"
log "raw results: $OUT; image $IMAGE pinned as $PIN"

{
  printf 'date_utc\t%s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
  printf 'nproc\t%s\n' "$(nproc)"
  printf 'cpu\t%s\n' "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
  printf 'memory\t%s\n' "$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
  printf 'kernel\t%s\n' "$(uname -r)"
  printf 'image\t%s (%s, created %s)\n' "$IMAGE" "${ID:7:12}" "$(docker image inspect -f '{{.Created}}' "$ID" | cut -c1-16)"
  printf 'image_pgrepl\t%s\n' "$(docker run --rm --entrypoint pgrepl "$PIN" --version 2>/dev/null | head -1)"
  printf 'image_postgres\t%s\n' "$(docker run --rm --entrypoint bash "$PIN" -c 'postgres --version 2>/dev/null || $(ls -d /usr/lib/postgresql/*/bin | tail -1)/postgres --version' 2>/dev/null | head -1)"
  printf 'image_etcd\t%s\n' "$(docker run --rm --entrypoint etcd "$PIN" --version 2>/dev/null | head -1)"
  printf 'docker\t%s\n' "$(docker version -f '{{.Server.Version}}')"
  printf 'docker_compose\t%s\n' "$(docker-compose version --short 2>/dev/null)"
  printf 'commit\t%s\n' "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  printf 'modes\t%s\n' "$MODES"
  printf 'up_trials\t%s\n' "$UP_TRIALS"
  printf 'trials\t%s\n' "$TRIALS"
  printf 'load_at_start\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
} >"$OUT/machine.tsv"

log "building the benchmark (release)"
(cd "$ROOT" && cargo test --release -p pgrepl --test bench_compose --no-run --quiet) >"$OUT/build.log" 2>&1 \
  || die "cargo build failed; see $OUT/build.log"

log "compose trials: modes $MODES, $UP_TRIALS up, $TRIALS kill and $TRIALS stop per mode"
rc=0
(cd "$ROOT" && PGREPL_TEST_IMAGE=$PIN BENCH_COMPOSE_MODES=$MODES BENCH_COMPOSE_UP_TRIALS=$UP_TRIALS \
  BENCH_COMPOSE_TRIALS=$TRIALS cargo test --release -p pgrepl --test bench_compose --quiet -- --ignored --nocapture) \
  >"$OUT/test.log" 2>&1 || rc=$?
grep -P '^BENCH\t' "$OUT/test.log" | cut -f2- >"$OUT/trials.jsonl" || true
printf 'load_after_compose\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.tsv"
[ "$rc" -eq 0 ] || log "the compose trials failed (exit $rc; see $OUT/test.log); reporting what was recorded"
[ -s "$OUT/trials.jsonl" ] || die "no compose trial was recorded; see $OUT/test.log"

case $BASELINE in
  0) ;;
  1)
    log "baseline: bench/failover.sh (${BENCH_FAILOVER_SYSTEMS:-pgrepl patroni-defaults})"
    before=$(ls -d "$ROOT"/bench/results/*-failover 2>/dev/null | sort | tail -1 || true)
    BENCH_FAILOVER_SYSTEMS=${BENCH_FAILOVER_SYSTEMS:-pgrepl patroni-defaults} BENCH_PUBLISH=0 \
      bash "$ROOT/bench/failover.sh" >"$OUT/failover.log" 2>&1 || log "bench/failover.sh failed; see $OUT/failover.log"
    after=$(ls -d "$ROOT"/bench/results/*-failover 2>/dev/null | sort | tail -1 || true)
    [ -n "$after" ] && [ "$after" != "$before" ] && ln -s "../$(basename "$after")" "$OUT/failover" ;;
  *)
    [ -s "$BASELINE/trials.tsv" ] || die "BENCH_COMPOSE_BASELINE=$BASELINE: no trials.tsv there"
    ln -s "$(cd "$BASELINE" && pwd)" "$OUT/failover" ;;
esac

doc_args=()
[ "$PUBLISH" = 1 ] && doc_args=(--doc "$ROOT/docs/benchmarks.md")
python3 "$ROOT/bench/compose_report.py" "$OUT" "${doc_args[@]}"
log "done; raw results in $OUT"
exit "$rc"
