#!/usr/bin/env bash
# Installs what pgrepl needs to build, run and test, when it is missing: PostgreSQL's server
# binaries (Debian's postgresql-15), etcd (etcd-server: the etcd store backend's tests start their
# own), protoc (protobuf-compiler, with libprotobuf-dev for the well-known .proto files it
# imports: the etcd client's build script needs both), haproxy (e2e_haproxy), an unprivileged
# `postgres` OS user, and the PyPI packages the end-to-end tests use, in a virtual environment in
# target/test-python.
# Idempotent and quiet when everything is there. Called by `make up`, `make test` and
# `make bench`.
#
# Debian's postgresql package normally creates and starts a `main` cluster on port 5432; pgrepl
# neither needs nor wants it, so before installing we tell postgresql-common not to create it.
# Likewise etcd-server enables and starts a system etcd on 2379/2380 (where the init system lets
# it); pgrepl's tests start their own on free ports, so right after installing we stop and
# disable it.
set -euo pipefail

PG_MAJOR="${PG_MAJOR:-15}"
want_packages=("postgresql-$PG_MAJOR" "postgresql-client-$PG_MAJOR" etcd-server protobuf-compiler libprotobuf-dev)
# The tests across hosts and the fault test: network namespaces, veths, a bridge and `tc`
# (iproute2), cut links and dropped packets (iptables).
want_packages+=(iproute2 iptables)
# e2e_tls captures the replication traffic between two such hosts to show it is encrypted.
want_packages+=(tcpdump)
# HAProxy: e2e_haproxy runs Patroni's HAProxy recipe against the members' HTTP APIs (and the
# benchmarks bench/router.sh, bench/failover.sh use it). Its own service listens on nothing with
# Debian's default configuration; it is stopped and disabled after installing all the same.
want_packages+=(haproxy)
# For the benchmarks: hyperfine, wrk (bench/api.sh), and for bench/failover.sh and bench/api.sh
# Patroni (with the local etcd above) and the writer's psycopg2.
[ "${PGREPL_BENCH:-}" = 1 ] && want_packages+=(hyperfine wrk patroni python3-psycopg2)
# The terminal tests of `pgrepl status --watch` and the progress line (e2e_watch) run it in tmux.
want_packages+=(tmux)
# The status page's test renders /ui in headless Chromium (e2e_api_ui).
want_packages+=(chromium)
# The end-to-end tests' Python (python3 -m venv): its PyPI packages are below.
want_packages+=(python3 python3-venv)
# Where a Docker engine answers, the image tests also drive the compose samples.
if docker info >/dev/null 2>&1 && ! command -v docker-compose >/dev/null 2>&1; then want_packages+=(docker-compose); fi

log() { printf 'setup: %s\n' "$*" >&2; }

pg_bindir() {
  if [ -n "${PGREPL_PG_BIN_DIR:-}" ] && [ -x "$PGREPL_PG_BIN_DIR/postgres" ]; then echo "$PGREPL_PG_BIN_DIR"; return; fi
  if command -v pg_config >/dev/null 2>&1; then
    d=$(pg_config --bindir 2>/dev/null || true)
    if [ -n "$d" ] && [ -x "$d/postgres" ]; then echo "$d"; return; fi
  fi
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r) /usr/local/pgsql/bin; do
    if [ -x "$d/postgres" ] && [ -x "$d/pg_basebackup" ] && [ -x "$d/pg_rewind" ]; then echo "$d"; return; fi
  done
}

missing=()
for p in "${want_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Binaries found elsewhere (a configured or source-built PostgreSQL) are good enough for the server.
if [ -n "$(pg_bindir)" ]; then
  missing=("${missing[@]/postgresql-$PG_MAJOR}")
  missing=("${missing[@]/postgresql-client-$PG_MAJOR}")
fi
read -r -a missing <<<"${missing[*]:-}"

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
      log "missing packages: ${missing[*]}; run this script as root (or install them) and try again"; exit 1
    fi
  else SUDO=""; fi
  log "installing ${missing[*]}"
  $SUDO mkdir -p /etc/postgresql-common/createcluster.d
  echo "create_main_cluster = false" | $SUDO tee /etc/postgresql-common/createcluster.d/pgrepl-no-main-cluster.conf >/dev/null
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [[ " ${missing[*]} " == *" etcd-server "* ]]; then
    log "stopping and disabling the system etcd service that etcd-server installs"
    if [ -d /run/systemd/system ]; then
      $SUDO systemctl disable --now etcd.service >/dev/null 2>&1 || true
    else
      $SUDO update-rc.d etcd disable >/dev/null 2>&1 || true
      $SUDO /etc/init.d/etcd stop >/dev/null 2>&1 || true
    fi
  fi
  if [[ " ${missing[*]} " == *" haproxy "* ]]; then
    log "stopping and disabling the system haproxy service (the tests run their own)"
    if [ -d /run/systemd/system ]; then
      $SUDO systemctl disable --now haproxy.service >/dev/null 2>&1 || true
    else
      $SUDO update-rc.d haproxy disable >/dev/null 2>&1 || true
      $SUDO /etc/init.d/haproxy stop >/dev/null 2>&1 || true
    fi
  fi
fi

bindir=$(pg_bindir)
if [ -z "$bindir" ]; then
  log "PostgreSQL server binaries not found even after installing postgresql-$PG_MAJOR; set PGREPL_PG_BIN_DIR"; exit 1
fi
if ! id postgres >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    log "creating the unprivileged OS user postgres"
    useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
  fi
fi
# PyPI packages the end-to-end tests use, in a virtual environment of their own at
# target/test-python (the tests look there, or at $PGREPL_TEST_PYTHON): prometheus-client, whose
# text parser e2e_api_metrics reads /metrics with, and kubernetes-validate, which checks the
# Kubernetes and OpenShift samples against the schemas it ships, offline (tests/manifests.rs).
want_pypi=(prometheus-client kubernetes-validate)
venv="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/test-python"
# One `pip show` per package: given several, it succeeds when any one is installed.
missing_pypi=()
for p in "${want_pypi[@]}"; do
  "$venv/bin/pip" show -q "$p" >/dev/null 2>&1 || missing_pypi+=("$p")
done
if [ "${#missing_pypi[@]}" -gt 0 ]; then
  log "installing ${missing_pypi[*]} from PyPI into $venv"
  [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "${missing_pypi[@]}"
fi
command -v cargo >/dev/null 2>&1 || { log "cargo not found: install the Rust toolchain (rustup) first"; exit 1; }
for tool in etcd protoc; do
  command -v "$tool" >/dev/null 2>&1 || { log "$tool not found on PATH after installing etcd-server and protobuf-compiler"; exit 1; }
done
log "ok: PostgreSQL binaries in $bindir; $(command -v etcd); $(command -v protoc)"
