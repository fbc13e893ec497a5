#!/usr/bin/env bash
# Start a throwaway PostgreSQL server for the test suite (sourced by scripts/test.sh); the tests that need
# Redis start their own redis-server processes. PostgreSQL refuses to run as root, so the cluster is owned
# by the `postgres` user.
PG_PORT="${PG_PORT:-55432}"
SERVICES_DIR="$(mktemp -d /tmp/composer-services.XXXXXX)"
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"

as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_services() {
  if [ -n "$PG_BIN" ] && [ -z "${COMPOSER_TEST_POSTGRES_URL:-}" ]; then
    [ "$(id -u)" -eq 0 ] && chown postgres "$SERVICES_DIR"
    as_pg "$PG_BIN/initdb" -D "$SERVICES_DIR/pg" -A trust -U composer >/dev/null
    as_pg "$PG_BIN/pg_ctl" -D "$SERVICES_DIR/pg" -o "-p $PG_PORT -k $SERVICES_DIR -c listen_addresses=127.0.0.1" \
      -l "$SERVICES_DIR/pg.log" -w start >/dev/null
    as_pg "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U composer composer_test
    export COMPOSER_TEST_POSTGRES_URL="postgresql+psycopg://composer@127.0.0.1:$PG_PORT/composer_test"
    echo "==> PostgreSQL on 127.0.0.1:$PG_PORT"
  fi
}

stop_services() {
  if [ -n "$PG_BIN" ] && [ -d "$SERVICES_DIR/pg" ]; then
    as_pg "$PG_BIN/pg_ctl" -D "$SERVICES_DIR/pg" -m fast stop >/dev/null 2>&1 || true
  fi
  rm -rf "$SERVICES_DIR"
}
