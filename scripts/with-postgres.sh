#!/usr/bin/env bash
# Run a command with TEST_DATABASE_URL pointing at a PostgreSQL server.
# Uses TEST_DATABASE_URL as given when it is set; otherwise installs PostgreSQL from Debian's packages
# when it is missing, starts a throwaway cluster on 127.0.0.1 and a free port, and removes it afterwards.
set -euo pipefail

if [[ -n "${TEST_DATABASE_URL:-}" ]]; then
  exec "$@"
fi

find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
PGBIN=$(find_bin || true)
if [[ -z "$PGBIN" || ! -x "$PGBIN/initdb" ]]; then
  echo "with-postgres: installing PostgreSQL from Debian packages" >&2
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  PGBIN=$(find_bin)
fi

RUN_AS=()
if [[ $(id -u) -eq 0 ]]; then RUN_AS=(runuser -u postgres --); fi

DATA=$(mktemp -d /tmp/warelay-pg.XXXXXX)
chmod 755 "$DATA"
[[ $(id -u) -eq 0 ]] && chown postgres:postgres "$DATA"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')

cleanup() {
  "${RUN_AS[@]}" "$PGBIN/pg_ctl" -D "$DATA/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$DATA"
}
trap cleanup EXIT

"${RUN_AS[@]}" "$PGBIN/initdb" -D "$DATA/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >/dev/null
"${RUN_AS[@]}" "$PGBIN/pg_ctl" -D "$DATA/data" -l "$DATA/server.log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DATA -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
  start >/dev/null
"$PGBIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres warelay_test

export TEST_DATABASE_URL="postgresql+asyncpg://postgres@127.0.0.1:$PORT/warelay_test"
echo "with-postgres: PostgreSQL on 127.0.0.1:$PORT" >&2
"$@"
