# Throwaway PostgreSQL for the tests: a fresh cluster in a temp dir, on a free loopback port,
# stopped by its postmaster PID. Source this file, call start_postgres; it exports
# STOWAGE_TEST_POSTGRES_URL (an admin URL; each test creates its own database) and installs
# stop_postgres in the EXIT trap.

PG_DIR=""
PG_PID=""

. "$(dirname "${BASH_SOURCE[0]}")/process.sh"

as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_postgres() {
  local port
  for tool in initdb pg_ctl; do
    command -v "$tool" >/dev/null || { echo "start_postgres: $tool not found (PostgreSQL server binaries are needed)" >&2; return 1; }
  done
  PG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/stowage-pg.XXXXXX")
  if [ "$(id -u)" = 0 ]; then chown postgres "$PG_DIR"; fi
  port=$(free_port)
  as_postgres initdb -D "$PG_DIR/data" -A trust -U postgres --no-sync >"$PG_DIR/initdb.log" 2>&1 \
    || { cat "$PG_DIR/initdb.log" >&2; return 1; }
  as_postgres pg_ctl -w -t 60 -D "$PG_DIR/data" -l "$PG_DIR/server.log" \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $PG_DIR -c fsync=off -c max_connections=300" start >/dev/null \
    || { cat "$PG_DIR/server.log" >&2; return 1; }
  PG_PID=$(head -n 1 "$PG_DIR/data/postmaster.pid")
  export STOWAGE_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres"
  echo "PostgreSQL $(postgres --version | awk '{print $3}') on 127.0.0.1:$port (pid $PG_PID)"
}

stop_postgres() {
  if [ -n "$PG_PID" ] && kill -0 "$PG_PID" 2>/dev/null; then
    kill -QUIT "$PG_PID" 2>/dev/null || true   # immediate shutdown
    for _ in $(seq 1 50); do kill -0 "$PG_PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$PG_PID" 2>/dev/null || true
  fi
  [ -n "$PG_DIR" ] && rm -rf "$PG_DIR"
  PG_PID=""
  PG_DIR=""
}
