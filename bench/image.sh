#!/usr/bin/env bash
# The container image (see docs/benchmarks.md, "Container image"):
#   1. its size;
#   2. seed 000's shape: from `docker run` of a master and two slaves (the template's variables
#      and arguments) to two `streaming` rows in the master's pg_stat_replication, against a
#      baseline in the same run: the same image doing what the seed's own scripts do, by hand
#      in a shell (initdb, start, create the roles; the slaves poll the master every second
#      as the seed's do, then pg_basebackup -R and start), so the difference is pgrepl's;
#   3. the compose sample (examples/compose/seed): from `docker-compose up -d` to one
#      streaming row.
# Trials alternate pgrepl and the baseline. Raw results go to bench/results/<stamp>-image/; the
# figures are printed, and with BENCH_WRITE_DOC=1 replace the image section of
# docs/benchmarks.md (between the bench:image markers).
#
# Usage (as root, with a Docker engine):  bash bench/image.sh   (make image first, or BENCH_BUILD=1)
# Knobs: BENCH_IMAGE_TRIALS=5, BENCH_WRITE_DOC=1, BENCH_BUILD=0, PGREPL_IMAGE=pgrepl:latest
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMAGE=${PGREPL_IMAGE:-pgrepl:latest}
TRIALS=${BENCH_IMAGE_TRIALS:-5}
WRITE_DOC=${BENCH_WRITE_DOC:-1}
log() { printf '[bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
now() { date +%s.%N; }

docker info >/dev/null 2>&1 || die "no Docker engine answers"
[ "${BENCH_BUILD:-0}" = 1 ] && make -C "$ROOT" image >/dev/null
docker image inspect "$IMAGE" >/dev/null 2>&1 || die "no image $IMAGE: run make image"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$ROOT/bench/results/$STAMP-image
mkdir -p "$OUT"
NET=pgrepl-bench-$$
# Benchmark passwords only: they reach docker through its environment (-e NAME), never argv.
export POSTGRESQL_MASTER_USER=master POSTGRESQL_MASTER_PASSWORD=benchMaster1 POSTGRESQL_USER=user \
  POSTGRESQL_PASSWORD=benchUser1 POSTGRESQL_DATABASE=userdb POSTGRESQL_ADMIN_PASSWORD=benchAdmin1
ENV_ARGS=(-e POSTGRESQL_MASTER_USER -e POSTGRESQL_MASTER_PASSWORD -e POSTGRESQL_USER -e POSTGRESQL_PASSWORD -e POSTGRESQL_DATABASE)

cleanup() {
  docker rm -f -v $(docker ps -aq --filter "network=$NET") >/dev/null 2>&1 || true
  docker network rm "$NET" >/dev/null 2>&1 || true
  (cd "$ROOT/examples/compose/seed" && COMPOSE_PROJECT_NAME=pgreplbench docker-compose down -v >/dev/null 2>&1) || true
}
trap cleanup EXIT

# streaming CONTAINER: the number of streaming rows in its pg_stat_replication (0 if it cannot say).
streaming() {
  docker exec "$1" bash -c "psql -X -At -h ${2:-/run/pgrepl/socket} -U postgres -c \"select count(*) from pg_stat_replication where state = 'streaming'\"" 2>/dev/null || echo 0
}
wait_rows() { # CONTAINER N [SOCKET]: polls every 100 ms, at most 120 s
  local i
  for i in $(seq 1 1200); do
    [ "$(streaming "$1" "${3:-}")" = "$2" ] && return 0
    sleep 0.1
  done
  return 1
}

# The baseline: what the seed's run-postgresql-master / -slave scripts do, in a shell.
read -r -d '' BASE_MASTER <<'EOF' || true
set -e
export PGDATA=/var/lib/pgsql/data/userdata
initdb -U postgres --auth-local=trust --auth-host=scram-sha-256 >/dev/null
cat >>$PGDATA/postgresql.conf <<CONF
listen_addresses = '*'
unix_socket_directories = '/tmp'
jit = off
wal_level = replica
max_wal_senders = 10
wal_keep_size = 1GB
CONF
echo "host replication $POSTGRESQL_MASTER_USER 0.0.0.0/0 scram-sha-256" >>$PGDATA/pg_hba.conf
echo "host all all 0.0.0.0/0 scram-sha-256" >>$PGDATA/pg_hba.conf
pg_ctl -w -s -l /tmp/log start
psql -h /tmp -q -c "create role \"$POSTGRESQL_MASTER_USER\" login replication password '$POSTGRESQL_MASTER_PASSWORD'" \
  -c "create role \"$POSTGRESQL_USER\" login password '$POSTGRESQL_PASSWORD'" -c "create database \"$POSTGRESQL_DATABASE\" owner \"$POSTGRESQL_USER\""
exec tail -f /tmp/log
EOF
read -r -d '' BASE_SLAVE <<'EOF' || true
set -e
export PGDATA=/var/lib/pgsql/data/userdata
until PGPASSWORD=$POSTGRESQL_MASTER_PASSWORD psql -h postgresql-master -U $POSTGRESQL_MASTER_USER -d postgres -c 'select 1' >/dev/null 2>&1; do
  echo "waiting for the master"; sleep 1
done
PGPASSWORD=$POSTGRESQL_MASTER_PASSWORD pg_basebackup -h postgresql-master -U $POSTGRESQL_MASTER_USER -D $PGDATA -X stream -c fast -R
echo "unix_socket_directories = '/tmp'" >>$PGDATA/postgresql.conf
export PGPASSWORD=$POSTGRESQL_MASTER_PASSWORD
exec postgres -c unix_socket_directories=/tmp -c jit=off
EOF

# seed000 KIND TRIAL: prints the seconds from the first docker run to two streaming rows.
seed000() {
  local kind=$1 t0 t1 m=$NET-m
  docker network create "$NET" >/dev/null
  t0=$(now)
  if [ "$kind" = pgrepl ]; then
    docker run -d --name "$m" --network "$NET" --network-alias postgresql-master "${ENV_ARGS[@]}" -e POSTGRESQL_ADMIN_PASSWORD "$IMAGE" run-postgresql-master >/dev/null
    for s in 1 2; do
      docker run -d --name "$NET-s$s" --network "$NET" --network-alias postgresql-slave "${ENV_ARGS[@]}" -e POSTGRESQL_MASTER_SERVICE_NAME=postgresql-master "$IMAGE" run-postgresql-slave >/dev/null
    done
    wait_rows "$m" 2 || { docker logs "$m" >"$OUT/failed-$kind.log" 2>&1; die "pgrepl: no two streaming rows"; }
  else
    docker run -d --name "$m" --network "$NET" --network-alias postgresql-master "${ENV_ARGS[@]}" --entrypoint bash "$IMAGE" -c "$BASE_MASTER" >/dev/null
    for s in 1 2; do
      docker run -d --name "$NET-s$s" --network "$NET" --network-alias postgresql-slave "${ENV_ARGS[@]}" --entrypoint bash "$IMAGE" -c "$BASE_SLAVE" >/dev/null
    done
    wait_rows "$m" 2 /tmp || { docker logs "$m" >"$OUT/failed-$kind.log" 2>&1; die "baseline: no two streaming rows"; }
  fi
  t1=$(now)
  cleanup
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }'
}

compose() {
  local t0 t1
  t0=$(now)
  (cd "$ROOT/examples/compose/seed" && COMPOSE_PROJECT_NAME=pgreplbench PGREPL_IMAGE=$IMAGE docker-compose up -d >/dev/null 2>&1)
  wait_rows pgreplbench_pg-master_1 1 || die "compose: no streaming row"
  t1=$(now)
  cleanup
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }'
}

size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
printf 'what\ttrial\tseconds\n' >"$OUT/times.tsv"
for i in $(seq 1 "$TRIALS"); do
  for kind in pgrepl baseline; do
    s=$(seed000 "$kind")
    log "seed 000 shape, $kind, trial $i: ${s}s"
    printf 'seed000-%s\t%s\t%s\n' "$kind" "$i" "$s" >>"$OUT/times.tsv"
  done
  s=$(compose)
  log "compose sample, trial $i: ${s}s"
  printf 'compose\t%s\t%s\n' "$i" "$s" >>"$OUT/times.tsv"
done

median() { grep "^$1	" "$OUT/times.tsv" | cut -f3 | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
range() { grep "^$1	" "$OUT/times.tsv" | cut -f3 | sort -n | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%s-%s", lo, hi }'; }
report=$(cat <<EOF
Run of $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), image \`$IMAGE\`, $TRIALS trials each, commit $(git -C "$ROOT" rev-parse --short HEAD). Command: \`bash bench/image.sh\`.

| what | median | range |
| --- | --- | --- |
| image size | $(awk -v s="$size" 'BEGIN { printf "%.0f MB (%d bytes)", s / 1e6, s }') | |
| seed 000 shape, pgrepl: \`docker run\` of master + 2 slaves to 2 streaming rows | $(median seed000-pgrepl) s | $(range seed000-pgrepl) s |
| seed 000 shape, baseline (the seed's steps by hand in a shell, same image) | $(median seed000-baseline) s | $(range seed000-baseline) s |
| compose sample (\`docker-compose up -d\`, master + 1 slave) to 1 streaming row | $(median compose) s | $(range compose) s |
EOF
)
printf '%s\n' "$report" | tee "$OUT/report.md"
if [ "$WRITE_DOC" = 1 ]; then
  python3 - "$ROOT/docs/benchmarks.md" "$OUT/report.md" <<'PY'
import sys
doc, rep = sys.argv[1], open(sys.argv[2]).read().strip()
text = open(doc).read()
begin, end = "<!-- bench:image:begin -->", "<!-- bench:image:end -->"
if begin not in text:
    sys.exit("docs/benchmarks.md has no bench:image markers")
head, rest = text.split(begin, 1)
_, tail = rest.split(end, 1)
open(doc, "w").write(head + begin + "\n" + rep + "\n" + end + tail)
PY
  log "wrote docs/benchmarks.md"
fi
