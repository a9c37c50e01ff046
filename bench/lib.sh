#!/usr/bin/env bash
# Helpers shared by the benchmark scripts (sourced, not run). They expect `log`, LOAD_MAX and
# LOAD_WAIT from the script that sources them.

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
