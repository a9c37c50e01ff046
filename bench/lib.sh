#!/usr/bin/env bash
# Helpers shared by the benchmark scripts (sourced, not run). They expect `log`, LOAD_MAX and
# LOAD_WAIT (wait_for_quiet), PGREPL and OUT (destroy_cluster), PY (free_ports), and `die`, ETCD,
# WORK, OUT and ETCD_PID (start_etcd) from the script that sources them.

now() { date +%s.%N; }

# Before each timed trial: flush dirty pages left by the previous one (`sync`), then wait until
# the 1-minute load average is below LOAD_MAX, at most LOAD_WAIT seconds.
# Sets LOAD (the load when the trial starts) and LOAD_WAITED (seconds waited).
wait_for_quiet() {
  local start=$SECONDS l
  sync
  while :; do
    l=$(cut -d' ' -f1 /proc/loadavg)
    awk -v l="$l" -v m="$LOAD_MAX" 'BEGIN { exit !(l < m) }' && break
    if (( SECONDS - start >= LOAD_WAIT )); then
      log "load average still $l after ${LOAD_WAIT}s; going on (recorded)"
      break
    fi
    sleep 2
  done
  LOAD=$l
  LOAD_WAITED=$((SECONDS - start))
}

# destroy_cluster DIR: `pgrepl down --destroy` the cluster in DIR, or at least stop it; fails
# (leaving DIR in place, so the caller keeps its scratch directory) when neither works.
destroy_cluster() {
  log "cleanup: destroying cluster $1"
  "$PGREPL" --dir "$1" down --destroy >/dev/null 2>>"$OUT/cleanup.err" && return 0
  "$PGREPL" --dir "$1" down >/dev/null 2>>"$OUT/cleanup.err" && return 0
  log "cleanup: could not stop the cluster in $1; left in place (see $OUT/cleanup.err)"
  return 1
}

# free_ports N: N TCP ports free on 127.0.0.1 right now (never 5432 or 5433).
free_ports() {
  "${PY:-python3}" -c '
import socket, sys
socks = []
while len(socks) < int(sys.argv[1]):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    if s.getsockname()[1] in (5432, 5433):
        continue
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
' "$1"
}

# is_proc PID WORD: PID runs and WORD is in its command line (guards against stale pid files).
is_proc() { [[ $1 =~ ^[0-9]+$ ]] && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q -- "$2"; }

# start_etcd: a one-member etcd (v3 API) as the postgres user under WORK/etcd, on free ports; sets
# ETCD_PID, ETCD_CLIENT and ETCD_PEER, its log in OUT/etcd.log. The caller stops it.
start_etcd() {
  local d=$WORK/etcd
  read -r ETCD_CLIENT ETCD_PEER <<<"$(free_ports 2)"
  install -d -o postgres -g postgres -m 0700 "$d"
  log "etcd: starting on 127.0.0.1:$ETCD_CLIENT (v3 API; as the postgres user)"
  (cd "$d" && exec setpriv --reuid postgres --regid postgres --init-groups -- "$ETCD" --name bench \
    --data-dir "$d/data" --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT" --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" --initial-cluster "bench=http://127.0.0.1:$ETCD_PEER" \
    --initial-cluster-state new) >"$OUT/etcd.log" 2>&1 3>&- &
  ETCD_PID=$!
  local i
  for i in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$ETCD_CLIENT/health" 2>/dev/null | grep -q '"health":"true"' && return 0
    kill -0 "$ETCD_PID" 2>/dev/null || die "etcd exited; see $OUT/etcd.log"
    sleep 0.2
  done
  die "etcd not healthy after 20 s; see $OUT/etcd.log"
}

# secret DIR KIND: a password from DIR/secrets.json (for an environment variable only).
secret() { "${PY:-python3}" -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1/secrets.json" "$2"; }

# gen_password: a fresh random password (for a baseline's own configuration file).
gen_password() { "${PY:-python3}" -c 'import secrets; print(secrets.token_hex(16))'; }

# stop_pid PID SECONDS: SIGTERM, wait up to SECONDS, then SIGKILL (PID a child of this shell).
stop_pid() {
  local pid=$1 i
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < $2 * 10; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null || true
}
