#!/usr/bin/env bash
# HTTP API benchmark (see docs/benchmarks.md, "HTTP API cost"): what each agent's HTTP API costs,
# beside Patroni's REST API on the same machine, in one run:
#   1. requests per second and latency (p50/p99): `wrk -t1 -c8 -d10s --latency` against GET PATH,
#      for each PATH of BENCH_API_PATHS, on the primary's agent of a `pgrepl up --replicas 2`
#      cluster and on the REST API of a one-node Patroni (Debian's patroni, on a local etcd), the
#      two alternated (which goes first rotates) and the whole list repeated BENCH_API_REPEATS
#      times; with HTTP keep-alive, and for the paths of BENCH_API_CLOSE_PATHS also with
#      `Connection: close` (one TCP connection per request, as HAProxy's checks do). A path a
#      system does not answer with 200 (say pgrepl's /metrics before it is built in) is recorded
#      in paths.tsv and not run against that system, so adding it later takes only a re-run.
#   2. CPU per 1,000 requests: utime+stime (/proc/PID/stat) of the agent process and of the
#      patroni process, and of each one's PostgreSQL (postmaster, its children and its reaped
#      children), and for Patroni of etcd, over each wrk run, minus what the same process used
#      over an equal idle interval measured just before it; also wrk's own CPU.
#   3. HAProxy checking every second: Debian's haproxy with Patroni's recipe (a `listen` section
#      with `option httpchk OPTIONS /primary`, one with `OPTIONS /replica`, `http-check expect
#      status 200`, `default-server inter 1s`, the 3 members as servers with `check port <api>`)
#      against the same pgrepl cluster, Patroni and etcd stopped by then: each agent's CPU% over
#      BENCH_API_HAPROXY_SECONDS without HAProxy, as long with it, and as long without again.
# Raw results go to bench/results/<UTC stamp>-api/ (gitignored): machine.tsv, paths.tsv, runs.tsv
# and per run the wrk output and /proc snapshots, haproxy.tsv with its snapshots, the HAProxy
# configuration and stats, the members' and Patroni's logs. The summary (bench/api_report.py) is
# printed and, unless BENCH_WRITE_DOC=0, written into docs/benchmarks.md between the bench:api
# markers.
#
# Usage (as root, like pgrepl's other commands on this machine):  bash bench/api.sh
#   (or: make bench-api; PGREPL_BENCH=1 bash scripts/setup.sh installs wrk, haproxy, patroni)
# Knobs (environment):
#   BENCH_API_PATHS="/primary /patroni /cluster /metrics"   paths measured with keep-alive
#   BENCH_API_CLOSE_PATHS="/primary"   paths also measured with `Connection: close` ("" for none)
#   BENCH_API_SECONDS=10               wrk -d of each run, and the idle interval before it
#   BENCH_API_THREADS=1 BENCH_API_CONNECTIONS=8   wrk -t and -c
#   BENCH_API_REPEATS=2                passes over the list of paths (figures: medians over them)
#   BENCH_API_HAPROXY_SECONDS=60       each phase of benchmark 3 (0: skip benchmark 3)
#   BENCH_LOAD_MAX=1.0 BENCH_LOAD_WAIT=60   before each pass of wrk runs and each phase of benchmark 3,
#                                      wait until the 1-minute load average is below this, for at most
#                                      this many seconds (recorded)
#   BENCH_WRITE_DOC=1                  0: only print the markdown, leave docs/benchmarks.md alone
#   BENCH_BUILD=1                      0: use target/release/pgrepl as it is
#   PG_BIN=/usr/lib/postgresql/15/bin WRK=/usr/bin/wrk HAPROXY=/usr/sbin/haproxy ETCD=/usr/bin/etcd
#   PATRONI=/usr/bin/patroni
# Patroni's passwords are generated per run into its 0600 configuration file; pgrepl's stay in
# its secrets file. The HTTP checks need none, and no password is printed or put on a command line.
# Never uses port 5432 or 5433; everything it starts is stopped on exit, failure or Ctrl-C.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PGREPL=$ROOT/target/release/pgrepl
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PY=python3
WRK=${WRK:-/usr/bin/wrk}
HAPROXY=${HAPROXY:-/usr/sbin/haproxy}
ETCD=${ETCD:-/usr/bin/etcd}
PATRONI=${PATRONI:-/usr/bin/patroni}
PATHS=${BENCH_API_PATHS:-/primary /patroni /cluster /metrics}
CLOSE_PATHS=${BENCH_API_CLOSE_PATHS-/primary}
SECONDS_PER_RUN=${BENCH_API_SECONDS:-10}
THREADS=${BENCH_API_THREADS:-1}
CONNECTIONS=${BENCH_API_CONNECTIONS:-8}
REPEATS=${BENCH_API_REPEATS:-2}
HAPROXY_SECONDS=${BENCH_API_HAPROXY_SECONDS:-60}
LOAD_MAX=${BENCH_LOAD_MAX:-1.0}
LOAD_WAIT=${BENCH_LOAD_WAIT:-60}
WRITE_DOC=${BENCH_WRITE_DOC:-1}
PROCSTAT=$ROOT/bench/procstat.py
SYSTEMS=(pgrepl patroni)

# log writes to the script's own stderr, kept as fd 3, so that it also shows from the cleanup trap
# (the daemons are started with 3>&-)
exec 3>&2
log() { printf '[bench-api %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&3; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (pgrepl switches to the postgres OS user itself; Patroni and etcd are started as postgres)"
id postgres >/dev/null 2>&1 || die "no OS user postgres (run scripts/setup.sh)"
for b in "$WRK" "$HAPROXY" "$ETCD" "$PATRONI" "$PG_BIN/postgres"; do
  [ -x "$b" ] || die "$b not found (PGREPL_BENCH=1 bash scripts/setup.sh installs wrk, haproxy, etcd-server and patroni)"
done
for p in $PATHS $CLOSE_PATHS; do [[ $p == /* ]] || die "path $p in BENCH_API_PATHS or BENCH_API_CLOSE_PATHS does not start with /"; done
if [ "${BENCH_BUILD:-1}" = 1 ] || [ ! -x "$PGREPL" ]; then
  log "building pgrepl (release)"
  (cd "$ROOT" && cargo build --release --bin pgrepl --quiet) || die "cargo build failed"
fi

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$ROOT/bench/results/$STAMP-api
mkdir -p "$OUT/runs"
# Cluster directories live here: reachable by the postgres user, short enough for unix sockets.
WORK=$(mktemp -d /tmp/pgrepl-bench-api.XXXXXX)
chown postgres:postgres "$WORK"
chmod 0755 "$WORK"
PD=$WORK/pgrepl
PAT_DIR=$WORK/patroni
ETCD_PID=
PATRONI_PID=
HAPROXY_PID=
log "raw results: $OUT; scratch: $WORK"

# now, wait_for_quiet, destroy_cluster, free_ports, is_proc, start_etcd, secret, gen_password,
# stop_pid: shared with the other benchmark scripts.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# stop_patroni: patroni (which stops its PostgreSQL), then a PostgreSQL left behind, immediately.
stop_patroni() {
  stop_pid "$PATRONI_PID" 60
  PATRONI_PID=
  if [ -f "$PAT_DIR/data/postmaster.pid" ] && runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PAT_DIR/data" status >/dev/null 2>&1; then
    log "stopping Patroni's PostgreSQL, left running"
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PAT_DIR/data" stop -m immediate -w -t 30 >/dev/null 2>&1 || true
  fi
}

save_logs() {
  mkdir -p "$OUT/logs"
  cp "$PD/supervisor.log" "$OUT/logs/" 2>/dev/null || true
  for m in "$PD"/members/*/; do [ -f "$m/member.log" ] && cp "$m/member.log" "$OUT/logs/$(basename "$m").log"; done
  cp "$PAT_DIR/patroni.log" "$OUT/logs/patroni.log" 2>/dev/null || true
  true
}

cleanup() {
  local rc=$? keep=0
  trap - EXIT INT TERM
  stop_pid "$HAPROXY_PID" 5
  if [ -n "$PATRONI_PID" ]; then log "cleanup: stopping Patroni"; stop_patroni; fi
  if [ -n "$ETCD_PID" ]; then log "cleanup: stopping etcd"; stop_pid "$ETCD_PID" 10; fi
  save_logs || true # (a full disk must not keep the cluster from being destroyed)
  if [ -e "$PD/pgrepl.toml" ]; then destroy_cluster "$PD" || keep=1; fi
  if [ "$keep" -eq 0 ]; then rm -rf "$WORK"; fi
  [ "$rc" -eq 0 ] || log "failed (exit $rc); partial raw results in $OUT"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- machine ----------------------------------------------------------------------------------
{
  printf 'date_utc\t%s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
  printf 'nproc\t%s\n' "$(nproc)"
  printf 'cpu\t%s\n' "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
  printf 'memory\t%s\n' "$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
  printf 'kernel\t%s\n' "$(uname -r)"
  printf 'postgres\t%s\n' "$("$PG_BIN/postgres" --version)"
  printf 'pgrepl_commit\t%s%s\n' "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    "$([ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no -- crates Cargo.toml Cargo.lock 2>/dev/null)" ] && echo ' (with uncommitted changes to the sources)')"
  printf 'pgrepl_binary\t%s\n' "$(date -u -r "$PGREPL" '+built %Y-%m-%d %H:%M UTC')"
  printf 'patroni\t%s\n' "$("$PATRONI" --version 2>&1 | head -1) (Debian $(dpkg-query -W -f='${Version}' patroni 2>/dev/null))"
  printf 'etcd\t%s\n' "$("$ETCD" --version 2>&1 | head -1) (Debian $(dpkg-query -W -f='${Version}' etcd-server 2>/dev/null))"
  printf 'haproxy\t%s\n' "$("$HAPROXY" -v | head -1)"
  printf 'wrk\t%s\n' "$("$WRK" --version 2>&1 | head -1 | cut -d' ' -f1-2)"
  printf 'wrk_args\t-t%s -c%s -d%ss --latency\n' "$THREADS" "$CONNECTIONS" "$SECONDS_PER_RUN"
  printf 'repeats\t%s\n' "$REPEATS"
  printf 'haproxy_seconds\t%s\n' "$HAPROXY_SECONDS"
  printf 'clk_tck\t%s\n' "$(getconf CLK_TCK)"
  printf 'load_at_start\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
} >"$OUT/machine.tsv"

# ---- pgrepl: a primary and 2 replicas -----------------------------------------------------------
read -r rw ro <<<"$(free_ports 2)"
log "pgrepl: starting a primary and 2 replicas (rw endpoint 127.0.0.1:$rw)"
"$PGREPL" --dir "$PD" up --replicas 2 --port "$rw" --ro-port "$ro" >"$OUT/pgrepl-up.out" 2>&1 3>&- \
  || die "pgrepl up failed; see $OUT/pgrepl-up.out"
"$PGREPL" --dir "$PD" status --json >"$OUT/status.json" || die "pgrepl status failed"
# members.tsv: name, role, state, host, port, api host:port, agent pid, postmaster pid
"$PY" -c '
import json, sys
for m in json.load(open(sys.argv[1]))["members"]:
    print("\t".join(str(m.get(k) or "-") for k in ("name", "role", "state", "host", "port", "api")))' "$OUT/status.json" \
  | while IFS=$'\t' read -r name role state host port api; do
      agent=$(tr -dc '0-9' <"$PD/members/$name/agent.lock")
      pm=$(head -1 "$PD/members/$name/data/postmaster.pid")
      is_proc "$agent" pgrepl || die "agent pid $agent of $name is not running pgrepl"
      is_proc "$pm" postgres || die "postmaster pid $pm of $name is not running postgres"
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$role" "$state" "$host" "$port" "$api" "$agent" "$pm"
    done >"$OUT/members.tsv"
[ "$(awk -F'\t' '$2 == "primary" && $3 == "running"' "$OUT/members.tsv" | wc -l)" = 1 ] \
  && [ "$(awk -F'\t' '$2 == "replica" && $3 == "streaming"' "$OUT/members.tsv" | wc -l)" = 2 ] \
  || die "expected a running primary and 2 streaming replicas; see $OUT/status.json"
[ "$(awk -F'\t' '$6 == "-"' "$OUT/members.tsv" | wc -l)" = 0 ] || die "a member publishes no API address (members[].api); see $OUT/status.json"
read -r PRIMARY PRIMARY_API PRIMARY_AGENT PRIMARY_PM <<<"$(awk -F'\t' '$2 == "primary" { print $1, $6, $7, $8 }' "$OUT/members.tsv")"
log "pgrepl: primary $PRIMARY, its API at $PRIMARY_API (agent pid $PRIMARY_AGENT)"

# ---- Patroni: one node on a local etcd ------------------------------------------------------------
start_etcd
read -r PAT_REST PAT_PG <<<"$(free_ports 2)"
install -d -o postgres -g postgres -m 0700 "$PAT_DIR"
# ttl 10, loop_wait 1, retry_timeout 4: a loop as often as pgrepl's (loop_wait 1 s by default)
cat >"$PAT_DIR/patroni.yml" <<EOF
scope: bench-api
namespace: /service/
name: node1
log:
  level: INFO
restapi:
  listen: 127.0.0.1:$PAT_REST
  connect_address: 127.0.0.1:$PAT_REST
etcd3:
  hosts: 127.0.0.1:$ETCD_CLIENT
bootstrap:
  dcs:
    ttl: 10
    loop_wait: 1
    retry_timeout: 4
    postgresql:
      use_slots: true
  initdb:
  - encoding: UTF8
  pg_hba:
  - local all all trust
  - host replication replicator 127.0.0.1/32 scram-sha-256
  - host all all 127.0.0.1/32 scram-sha-256
postgresql:
  listen: 127.0.0.1:$PAT_PG
  connect_address: 127.0.0.1:$PAT_PG
  data_dir: $PAT_DIR/data
  bin_dir: $PG_BIN
  pgpass: $PAT_DIR/pgpass
  authentication:
    superuser:
      username: postgres
      password: $(gen_password)
    replication:
      username: replicator
      password: $(gen_password)
  parameters:
    unix_socket_directories: $PAT_DIR
EOF
chown postgres:postgres "$PAT_DIR/patroni.yml"
chmod 0600 "$PAT_DIR/patroni.yml"
log "patroni: starting one node (REST API 127.0.0.1:$PAT_REST)"
(cd "$PAT_DIR" && exec setpriv --reuid postgres --regid postgres --init-groups -- \
  env HOME="$PAT_DIR" TZ=UTC "$PATRONI" "$PAT_DIR/patroni.yml") >>"$PAT_DIR/patroni.log" 2>&1 3>&- &
PATRONI_PID=$!
for i in $(seq 1 120); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' -m 2 "http://127.0.0.1:$PAT_REST/primary" 2>/dev/null)" = 200 ] && break
  kill -0 "$PATRONI_PID" 2>/dev/null || die "patroni exited; see $PAT_DIR/patroni.log"
  sleep 0.5
done
[ "$(curl -s -o /dev/null -w '%{http_code}' -m 2 "http://127.0.0.1:$PAT_REST/primary")" = 200 ] \
  || die "Patroni's /primary does not answer 200 after 60 s; see $PAT_DIR/patroni.log"
is_proc "$PATRONI_PID" patroni || die "pid $PATRONI_PID is not running patroni"
is_proc "$ETCD_PID" etcd || die "pid $ETCD_PID is not running etcd"
PATRONI_PM=$(head -1 "$PAT_DIR/data/postmaster.pid")
is_proc "$PATRONI_PM" postgres || die "postmaster pid $PATRONI_PM of Patroni's node is not running postgres"
printf 'patroni_dcs_config\t%s\n' "$(curl -fsS "http://127.0.0.1:$PAT_REST/config")" >>"$OUT/machine.tsv"
log "patroni: leading (pid $PATRONI_PID, postmaster $PATRONI_PM)"

declare -A ADDR=([pgrepl]=$PRIMARY_API [patroni]=127.0.0.1:$PAT_REST)
declare -A PROC=([pgrepl]=$PRIMARY_AGENT [patroni]=$PATRONI_PID)
declare -A PM=([pgrepl]=$PRIMARY_PM [patroni]=$PATRONI_PM)

# ---- which paths each system answers ------------------------------------------------------------
printf 'system\tpath\tcode\n' >"$OUT/paths.tsv"
declare -A SERVES=()
for p in $PATHS $CLOSE_PATHS; do
  for s in "${SYSTEMS[@]}"; do
    [ -n "${SERVES[$s$p]:-}" ] && continue
    sample=$OUT/sample-$s-$(tr -c 'a-z0-9\n' '_' <<<"${p#/}")
    code=$(curl -s -D "$sample.headers" -o "$sample.body" -w '%{http_code}' -m 5 "http://${ADDR[$s]}$p") || code=000
    SERVES[$s$p]=$code
    printf '%s\t%s\t%s\n' "$s" "$p" "$code" >>"$OUT/paths.tsv"
    [ "$code" = 200 ] || log "$s answers GET $p with $code: not measured on $s"
  done
done

# ---- 1 and 2: wrk runs ----------------------------------------------------------------------------
printf 'system\tpath\tconnection\trepeat\tload\tprefix\twrk_rc\n' >"$OUT/runs.tsv"
printf 'pass\tload\tload_waited_s\n' >"$OUT/passes.tsv"

# snapshot SYSTEM: the system's process, its PostgreSQL and, for Patroni, etcd (which serves the
# store reads some of Patroni's answers make; pgrepl's agents answer from their loop's last view).
snapshot() {
  local extra=()
  [ "$1" = patroni ] && extra=("store=$ETCD_PID")
  "$PY" "$PROCSTAT" snapshot "proc=${PROC[$1]}" "${extra[@]}" --tree "pg=${PM[$1]}"
}

# run_wrk SYSTEM PATH CONNECTION REPEAT: an idle interval, then the wrk run, as long.
run_wrk() {
  local s=$1 p=$2 c=$3 r=$4 slug pre rc=0 hdr=()
  slug=$(tr -c 'a-z0-9\n' '_' <<<"${p#/}")
  pre=runs/$s-$slug-$c-$r
  [ "$c" = close ] && hdr=(-H "Connection: close")
  LOAD=$(cut -d' ' -f1 /proc/loadavg)
  log "$s GET $p ($c), pass $r: idle ${SECONDS_PER_RUN}s, then wrk (load $LOAD)"
  snapshot "$s" >"$OUT/$pre.idle0.json"
  sleep "$SECONDS_PER_RUN"
  snapshot "$s" >"$OUT/$pre.idle1.json"
  "$PY" "$PROCSTAT" rusage "$OUT/$pre.wrk-cpu" -- "$WRK" -t"$THREADS" -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" --latency "${hdr[@]}" \
    "http://${ADDR[$s]}$p" >"$OUT/$pre.wrk.txt" 2>&1 3>&- || rc=$?
  snapshot "$s" >"$OUT/$pre.load1.json"
  kill -0 "${PROC[$s]}" 2>/dev/null || die "the $s process ${PROC[$s]} is gone"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$s" "$p" "$c" "$r" "$LOAD" "$pre" "$rc" >>"$OUT/runs.tsv"
  log "  $(grep -E 'Requests/sec' "$OUT/$pre.wrk.txt" || echo "wrk exit $rc; see $OUT/$pre.wrk.txt")"
}

order=0
for r in $(seq 1 "$REPEATS"); do
  # The load average is waited for once a pass: right after a wrk run it mostly shows that run.
  # Each run's own idle interval shows how busy the rest of the machine was (report: machine busy).
  wait_for_quiet
  log "pass $r of $REPEATS (1-minute load $LOAD, waited ${LOAD_WAITED}s)"
  printf '%s\t%s\t%s\n' "$r" "$LOAD" "$LOAD_WAITED" >>"$OUT/passes.tsv"
  work=()
  for p in $PATHS; do work+=("$p keep-alive"); done
  for p in $CLOSE_PATHS; do work+=("$p close"); done
  for w in "${work[@]}"; do
    read -r p c <<<"$w"
    # which system goes first rotates, so that neither always runs right after the other
    if (( order++ % 2 == 0 )); then first=pgrepl second=patroni; else first=patroni second=pgrepl; fi
    for s in $first $second; do
      [ "${SERVES[$s$p]}" = 200 ] || continue
      run_wrk "$s" "$p" "$c" "$r"
    done
  done
done

log "patroni: stopping it and etcd (benchmark 3 measures pgrepl's agents alone)"
stop_patroni
stop_pid "$ETCD_PID" 10
ETCD_PID=

# ---- 3. HAProxy checking every second -------------------------------------------------------------
# haproxy_stat: HAProxy's `show stat` (CSV) from its stats socket.
haproxy_stat() {
  "$PY" -c '
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"show stat\n")
data = b""
while True:
    b = s.recv(65536)
    if not b:
        break
    data += b
sys.stdout.write(data.decode())' "$WORK/haproxy.sock"
}

# snapshot_members: every agent and every member's PostgreSQL.
snapshot_members() {
  local args=() name agent pm
  while IFS=$'\t' read -r name _ _ _ _ _ agent pm; do args+=("$name=$agent"); done <"$OUT/members.tsv"
  while IFS=$'\t' read -r name _ _ _ _ _ agent pm; do args+=(--tree "$name=$pm"); done <"$OUT/members.tsv"
  "$PY" "$PROCSTAT" snapshot "${args[@]}"
}

if [ "$HAPROXY_SECONDS" -gt 0 ]; then
  read -r HA_RW HA_RO <<<"$(free_ports 2)"
  {
    echo "global"
    echo "    maxconn 100"
    echo "    stats socket $WORK/haproxy.sock mode 600 level admin"
    echo ""
    echo "defaults"
    echo "    mode tcp"
    echo "    retries 2"
    echo "    timeout client 30m"
    echo "    timeout connect 4s"
    echo "    timeout server 30m"
    echo "    timeout check 5s"
    for l in primary replica; do
      echo ""
      echo "listen $l"
      if [ "$l" = primary ]; then echo "    bind 127.0.0.1:$HA_RW"; else echo "    bind 127.0.0.1:$HA_RO"; echo "    balance roundrobin"; fi
      echo "    option httpchk OPTIONS /$l"
      echo "    http-check expect status 200"
      echo "    default-server inter 1s fall 3 rise 2 on-marked-down shutdown-sessions"
      while IFS=$'\t' read -r name _ _ host port api _ _; do
        echo "    server $name $host:$port maxconn 100 check port ${api##*:}"
      done <"$OUT/members.tsv"
    done
  } >"$OUT/haproxy.cfg"
  "$HAPROXY" -c -q -f "$OUT/haproxy.cfg" || die "haproxy rejects $OUT/haproxy.cfg"
  printf 'phase\tt0\tt1\tload\tload_waited_s\tsnap0\tsnap1\n' >"$OUT/haproxy.tsv"
  # phase NAME: one interval of HAPROXY_SECONDS, snapshots around it.
  phase() {
    local t0 t1
    wait_for_quiet
    log "agents' CPU, $1: ${HAPROXY_SECONDS}s (load $LOAD)"
    t0=$(now)
    snapshot_members >"$OUT/haproxy-$1.0.json"
    sleep "$HAPROXY_SECONDS"
    snapshot_members >"$OUT/haproxy-$1.1.json"
    t1=$(now)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$t0" "$t1" "$LOAD" "$LOAD_WAITED" "haproxy-$1.0.json" "haproxy-$1.1.json" >>"$OUT/haproxy.tsv"
  }
  phase without-1
  log "haproxy: checking the 3 members every second (primary listen 127.0.0.1:$HA_RW, replica 127.0.0.1:$HA_RO)"
  "$HAPROXY" -f "$OUT/haproxy.cfg" -db >"$OUT/haproxy.log" 2>&1 3>&- &
  HAPROXY_PID=$!
  sleep 3 # past the first checks (rise 2 at inter 1s)
  kill -0 "$HAPROXY_PID" 2>/dev/null || die "haproxy exited; see $OUT/haproxy.log"
  haproxy_stat >"$OUT/haproxy-stat-start.csv"
  phase with
  haproxy_stat >"$OUT/haproxy-stat-end.csv"
  stop_pid "$HAPROXY_PID" 5
  HAPROXY_PID=
  phase without-2
fi

save_logs
"$PGREPL" --dir "$PD" status --json >"$OUT/status-end.json" 2>/dev/null || true

# ---- report -------------------------------------------------------------------------------------
doc_args=()
[ "$WRITE_DOC" = 1 ] && doc_args=(--doc "$ROOT/docs/benchmarks.md")
"$PY" "$ROOT/bench/api_report.py" "$OUT" "${doc_args[@]}"
log "done; raw results in $OUT"
