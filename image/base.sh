#!/usr/bin/env bash
# Builds the base of the pgrepl image without any registry: a minimal Debian bookworm root file
# system made by mmdebstrap (variant minbase) from the machine's own apt mirror, with the packages
# of image/packages inside and the filters of image/dpkg.cfg applied, checked in a container, and
# imported into Docker as pgrepl-base:<hash> (also tagged pgrepl-base:latest).
#
# <hash> covers this script, image/packages and image/dpkg.cfg: when an image with that tag
# exists, nothing else is done. The tag is the only thing printed on standard output (progress
# goes to standard error), so `base=$(bash image/base.sh)` gives the Dockerfile's BASE.
#
# Environment: PGREPL_BASE_MIRROR and PGREPL_BASE_SECURITY_MIRROR (archive URLs) replace the
# Debian and Debian security mirrors found in the apt sources; PGREPL_BASE_REBUILD=1 builds even
# when the tag exists.
set -euo pipefail

SUITE=bookworm
PG_MAJOR=15
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

log() { printf 'image/base.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

command -v docker >/dev/null 2>&1 || die "docker not found: install Docker first"

hash=$(cat "$here/base.sh" "$here/packages" "$here/dpkg.cfg" | sha256sum | cut -c1-16)
tag="pgrepl-base:$hash"
if [ "${PGREPL_BASE_REBUILD:-}" != 1 ] && docker image inspect "$tag" >/dev/null 2>&1; then
  docker tag "$tag" pgrepl-base:latest
  echo "$tag"
  exit 0
fi

mapfile -t packages < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' "$here/packages")
[ "${#packages[@]}" -gt 0 ] || die "no packages in $here/packages"

# --- the mirror, from this machine's apt sources -------------------------------------------
# Prints "KIND URI" for every enabled binary ("deb") source, KIND being `security` for a
# *-security (or */updates) suite and `archive` for the others. Both the one-line format
# (sources.list, *.list) and deb822 (*.sources) are read.
host_sources() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -r "$f" ] || continue
    sed -e 's/#.*//' "$f" | awk '
      $1 == "deb" {
        i = 2
        if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
        if (i + 1 > NF) next
        kind = ($(i + 1) ~ /(-security|\/updates)$/) ? "security" : "archive"
        print kind, $i
      }'
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -r "$f" ] || continue
    awk '
      function flush(   n, u, s, i, j, kind) {
        if (types ~ /(^| )deb( |$)/ && enabled !~ /^(no|false|0)$/) {
          n = split(uris, u, " "); m = split(suites, s, " ")
          for (i = 1; i <= n; i++) for (j = 1; j <= m; j++) {
            kind = (s[j] ~ /(-security|\/updates)$/) ? "security" : "archive"
            print kind, u[i]
          }
        }
        types = ""; uris = ""; suites = ""; enabled = ""; field = ""
      }
      /^[[:space:]]*#/ { next }
      /^[[:space:]]*$/ { flush(); next }
      /^[[:space:]]/ { if (field == "uris") uris = uris " " $0; else if (field == "suites") suites = suites " " $0; next }
      {
        key = tolower($0); sub(/:.*/, "", key)
        val = $0; sub(/^[^:]*:[[:space:]]*/, "", val)
        field = key
        if (key == "types") types = val
        else if (key == "uris") uris = val
        else if (key == "suites") suites = val
        else if (key == "enabled") enabled = tolower(val)
      }
      END { flush() }' "$f"
  done
}

archive="${PGREPL_BASE_MIRROR:-}"
security="${PGREPL_BASE_SECURITY_MIRROR:-}"
if [ -z "$archive" ]; then
  sources=$(host_sources)
  archive=$(awk '$1 == "archive" { print $2; exit }' <<<"$sources")
  [ -n "$security" ] || security=$(awk '$1 == "security" { print $2; exit }' <<<"$sources")
fi
[ -n "$archive" ] || die "no Debian mirror found in /etc/apt/sources.list{,.d/*.list,.d/*.sources}; set PGREPL_BASE_MIRROR"
mirrors=("deb ${archive%/} $SUITE main" "deb ${archive%/} $SUITE-updates main")
[ -z "$security" ] || mirrors+=("deb ${security%/} $SUITE-security main")

# --- mmdebstrap, installed like every other tool the project needs ------------------------
if ! command -v mmdebstrap >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
    die "mmdebstrap is missing; run this script as root (or install mmdebstrap) and try again"
  fi
  log "installing mmdebstrap"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null
fi

tmp=$(mktemp -d "${TMPDIR:-/var/tmp}/pgrepl-base.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# Before the packages are installed (after the Essential ones): tell postgresql-common not to
# create and start a `main` cluster. The setting stays in the image.
essential_hook='mkdir -p "$1/etc/postgresql-common/createcluster.d" &&
  echo "create_main_cluster = false" > "$1/etc/postgresql-common/createcluster.d/pgrepl.conf"'
# After: leftovers that an image does not need. ssl-cert made a "snakeoil" key pair that every
# container of the image would share: it goes (`make-ssl-cert generate-default-snakeoil` makes one).
customize_hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/var/cache/debconf/*-old \
    "$1"/var/lib/dpkg/*-old "$1"/var/log/apt/* "$1"/var/log/*.log "$1"/var/cache/ldconfig/aux-cache &&
  rm -f "$1"/etc/ssl/private/ssl-cert-snakeoil.key "$1"/etc/ssl/certs/ssl-cert-snakeoil.pem'

log "building a $SUITE root file system with: ${packages[*]} (from ${mirrors[*]})"
start=$(date +%s)
mmdebstrap --quiet --variant=minbase --format=tar \
  --include="$(IFS=,; echo "${packages[*]}")" \
  --aptopt='APT::Install-Recommends "false"' \
  --aptopt='APT::Install-Suggests "false"' \
  --dpkgopt="$here/dpkg.cfg" \
  --essential-hook="$essential_hook" \
  --customize-hook="$customize_hook" \
  "$SUITE" "$tmp/rootfs.tar" "${mirrors[@]}" >&2
log "root file system made in $(( $(date +%s) - start )) s: $(du -h "$tmp/rootfs.tar" | cut -f1)"

docker import \
  --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
  --change 'CMD ["/bin/bash"]' \
  --message "pgrepl base: Debian $SUITE minbase with ${packages[*]}" \
  "$tmp/rootfs.tar" "$tag" >/dev/null
rm -f "$tmp/rootfs.tar"

# The check: every PostgreSQL and etcd binary finds its libraries (no LLVM left behind), and a
# cluster initialises, starts and answers, with JIT left at its default (it must fall back to no
# JIT) and forced on for a query.
log "checking $tag"
if ! docker run --rm --network none --user postgres --entrypoint /bin/bash "$tag" -c '
    set -euo pipefail
    d=""
    trap '"'"'echo "check failed: $BASH_COMMAND" >&2; [ -n "$d" ] && cat "$d/log" >&2 2>/dev/null'"'"' ERR
    export PATH=/usr/lib/postgresql/'"$PG_MAJOR"'/bin:$PATH LANG=C.UTF-8
    if ls /usr/lib/*/libLLVM* /usr/lib/postgresql/*/lib/llvmjit* >/dev/null 2>&1; then echo "LLVM still there" >&2; exit 1; fi
    for f in /usr/lib/postgresql/*/bin/* /usr/lib/postgresql/*/lib/*.so /usr/bin/etcd; do
      if ldd "$f" 2>/dev/null | grep -q "not found"; then echo "$f: missing libraries:" >&2; ldd "$f" | grep "not found" >&2; exit 1; fi
    done
    postgres --version
    etcd --version | sed -n 1p
    d=$(mktemp -d)
    initdb --auth=trust -D "$d/data" >/dev/null
    pg_ctl -D "$d/data" -o "-c listen_addresses= -k $d" -l "$d/log" -w start >/dev/null
    psql -h "$d" -d postgres -XAtc "set jit_above_cost = 0; select \$\$select with jit=\$\$ || current_setting(\$\$jit\$\$) || \$\$: \$\$ || sum(g) from generate_series(1, 1000) g"
    pg_ctl -D "$d/data" -m fast -w stop >/dev/null
  ' >&2; then
  docker rmi "$tag" >/dev/null 2>&1 || true
  die "the new base failed its check; $tag removed"
fi
docker tag "$tag" pgrepl-base:latest
log "made $tag in $(( $(date +%s) - start )) s"
echo "$tag"
