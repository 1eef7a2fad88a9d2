# Throwaway MariaDB (standing in for MySQL / Aurora MySQL) for the tests: installed from Debian's
# packages if missing, a fresh datadir in a temp dir, a free loopback port, stopped by its PID.
# Source this file, call start_mariadb; it exports STOWAGE_TEST_MYSQL_URL (a user that may
# create databases; each test creates its own).

. "$(dirname "${BASH_SOURCE[0]}")/process.sh"

MY_DIR=""
MY_PID=""

install_mariadb() {
  command -v mariadbd >/dev/null && command -v mariadb-install-db >/dev/null && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "install_mariadb: mariadb-server is not installed and this is not root" >&2
    return 1
  fi
  echo "Installing mariadb-server from Debian's packages"
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server >/dev/null
}

start_mariadb() {
  local port user
  install_mariadb || return 1
  MY_DIR=$(mktemp -d "${TMPDIR:-/tmp}/stowage-mariadb.XXXXXX")
  user=$(id -un)
  if [ "$(id -u)" = 0 ]; then user=mysql; chown mysql "$MY_DIR"; fi
  port=$(free_port)
  mariadb-install-db --no-defaults --user="$user" --datadir="$MY_DIR/data" \
    --auth-root-authentication-method=normal >"$MY_DIR/install.log" 2>&1 \
    || { cat "$MY_DIR/install.log" >&2; return 1; }
  cat >"$MY_DIR/init.sql" <<SQL
CREATE USER 'stowage'@'%' IDENTIFIED BY 'stowage';
CREATE USER 'stowage'@'localhost' IDENTIFIED BY 'stowage';
GRANT ALL PRIVILEGES ON *.* TO 'stowage'@'%' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON *.* TO 'stowage'@'localhost' WITH GRANT OPTION;
SQL
  [ "$(id -u)" = 0 ] && chown mysql "$MY_DIR/init.sql"
  mariadbd --no-defaults --user="$user" --datadir="$MY_DIR/data" --bind-address=127.0.0.1 \
    --port="$port" --socket="$MY_DIR/sock" --pid-file="$MY_DIR/mariadb.pid" --skip-log-bin \
    --innodb-flush-log-at-trx-commit=2 --max-connections=500 --init-file="$MY_DIR/init.sql" \
    >"$MY_DIR/server.log" 2>&1 &
  MY_PID=$!
  if wait_ready "$MY_PID" 30 mariadb --no-defaults -h 127.0.0.1 -P "$port" -u stowage -pstowage -e 'SELECT 1'; then
    export STOWAGE_TEST_MYSQL_URL="mysql://stowage:stowage@127.0.0.1:$port/mysql"
    echo "MariaDB $(mariadbd --version | awk '{print $3}') on 127.0.0.1:$port (pid $MY_PID)"
    return 0
  fi
  cat "$MY_DIR/server.log" >&2
  return 1
}

stop_mariadb() {
  stop_pid "$MY_PID" 15
  [ -n "$MY_DIR" ] && rm -rf "$MY_DIR"
  MY_PID=""
  MY_DIR=""
}
