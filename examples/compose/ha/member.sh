#!/bin/sh
# member.sh primary|replica|status: the service name of the current primary, or of the first
# replica, or the cluster's status, as the first member container that answers sees it.
set -eu
COMPOSE=${COMPOSE:-docker-compose}
ask() {
    for service in pg-1 pg-2 pg-3; do
        if out=$($COMPOSE exec -T "$service" pgrepl --dir /var/lib/pgsql/data/pgrepl status "$@" 2>/dev/null); then
            printf '%s\n' "$out"
            return 0
        fi
    done
    echo "member.sh: no member container answers (is the cluster up? make up)" >&2
    exit 1
}
case "${1:-}" in
    status) ask ;;
    primary) ask --json | sed -n 's/^  "leader": "\(.*\)",$/\1/p' ;;
    replica) ask --json | grep -B3 '"role": "replica"' | sed -n 's/.*"name": "\(.*\)".*/\1/p' | head -1 ;;
    *) echo "usage: member.sh primary|replica|status" >&2; exit 2 ;;
esac
