#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests (Debian's postgresql package), on 127.0.0.1 only.
#   scripts/postgres.sh start DIR   -> installs the package if missing, starts a cluster in DIR,
#                                      creates database detopt_test, prints its SQLAlchemy URL
#   scripts/postgres.sh stop DIR    -> stops it
# The tests read the URL from DETOPT_POSTGRES_URL (.ci/run exports it).
set -euo pipefail
cmd=${1:?start or stop}
dir=${2:?a folder for the cluster}
# a free port unless one is given (a server left from another run keeps its own)
port=${DETOPT_POSTGRES_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}

bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$d" ]; then
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    d=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi
  echo "$d"
}

# postgres refuses to run as root: run its commands as the postgres user when we are root
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

case "$cmd" in
  start)
    bin=$(bindir)
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; fi
    if [ ! -f "$dir/PG_VERSION" ]; then
      as_pg "$bin/initdb" -D "$dir" -U postgres -A trust >/dev/null
    fi
    as_pg "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=50" start >/dev/null
    as_pg "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname='detopt_test'" | grep -q 1 ||
      as_pg "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres detopt_test
    echo "postgresql://postgres@127.0.0.1:$port/detopt_test"
    ;;
  stop)
    bin=$(bindir)
    as_pg "$bin/pg_ctl" -D "$dir" -m fast stop >/dev/null || true
    ;;
  *) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
