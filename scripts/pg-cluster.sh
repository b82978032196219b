#!/usr/bin/env bash
# Start a throwaway PostgreSQL cluster for the tests and print its DSN.
#
#   eval "$(scripts/pg-cluster.sh start)"   # exports POSTBACK_TEST_PG and PGDATA_DIR
#   scripts/pg-cluster.sh stop "$PGDATA_DIR"
#
# The cluster lives in a temporary folder, listens on a free loopback port
# (and a unix socket in that folder), and uses synchronous_commit on and
# fsync on, as production would. initdb refuses to run as root, so as root
# the cluster belongs to the "postgres" user (created by Debian's package).
# Installs Debian's PostgreSQL when no server binaries are found.
set -euo pipefail

find_bin() {
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && { echo "$d"; return 0; }
  done
  command -v initdb >/dev/null 2>&1 && { dirname "$(command -v initdb)"; return 0; }
  return 1
}

start() {
  local bin
  if ! bin=$(find_bin); then
    if [ "$(id -u)" = 0 ]; then
      echo "installing PostgreSQL (Debian package)" >&2
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) >&2
      bin=$(find_bin)
    else
      echo "no PostgreSQL server binaries (apt-get install postgresql)" >&2
      exit 1
    fi
  fi
  local dir port run
  dir=$(mktemp -d /tmp/postback-pg.XXXXXX)
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo $((20000 + RANDOM % 20000)))
  run=()
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home "$dir" postgres
    chown postgres "$dir"
    run=(runuser -u postgres --)
  fi
  # Password authentication over TCP, as a real server has it (the tests
  # check the wrong-password message); trust on the unix socket only.
  local pw
  pw=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
  echo "$pw" >"$dir/pw"
  [ "$(id -u)" = 0 ] && chown postgres "$dir/pw"
  "${run[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 --pwfile="$dir/pw" -E UTF8 >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
  cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 300
shared_buffers = 256MB
synchronous_commit = on
fsync = on
CONF
  "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
  "${run[@]}" "$bin/psql" -h "$dir" -p "$port" -U postgres -qc "CREATE DATABASE postback_test" >/dev/null
  echo "export POSTBACK_TEST_PG='postgres://postgres:$pw@127.0.0.1:$port/postback_test?sslmode=disable'"
  echo "export PGDATA_DIR='$dir'"
  echo "export PG_BIN='$bin'"
}

stop() {
  local dir=${1:?usage: pg-cluster.sh stop DIR}
  local bin run=()
  bin=$(find_bin)
  [ "$(id -u)" = 0 ] && run=(runuser -u postgres --)
  "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}

case "${1:-}" in
  start) start ;;
  stop) shift; stop "$@" ;;
  *) echo "usage: $0 start | stop DIR" >&2; exit 2 ;;
esac
