#!/usr/bin/env bash
# Helpers shared by the benchmark scripts (sourced, not run). They expect `log`, LOAD_MAX and
# LOAD_WAIT (wait_for_quiet), PGREPL and OUT (destroy_cluster) from the script that sources them.

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
