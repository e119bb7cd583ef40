#!/usr/bin/env bash
# Start a throwaway MariaDB on 127.0.0.1 for the test suite, run a command against it, stop it.
#   scripts/mariadb_local.sh <command...>
# The command sees TEST_DATABASE_URL. Data lives in a temporary folder that is removed after.
set -euo pipefail

if ! command -v mariadbd >/dev/null 2>&1 && ! command -v mysqld >/dev/null 2>&1; then
  echo "MariaDB is not installed: apt-get install mariadb-server" >&2
  exit 2
fi
server=$(command -v mariadbd || command -v mysqld)
install_db=$(command -v mariadb-install-db || command -v mysql_install_db)
client=$(command -v mariadb || command -v mysql)

datadir=$(mktemp -d /tmp/wallet-mariadb.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
sock="$datadir/mysqld.sock"
run_as=()
[ "$(id -u)" = 0 ] && run_as=(--user=root)

cleanup() {
  # the tests may have restarted the server: its pid file says which process is current
  local current
  current=$(cat "$datadir/mysqld.pid" 2>/dev/null || echo "${pid:-}")
  for p in ${pid:-} $current; do
    if kill -0 "$p" 2>/dev/null; then kill "$p" 2>/dev/null || true; fi
  done
  for _ in $(seq 1 40); do
    kill -0 "$current" 2>/dev/null || break
    sleep 0.25
  done
  rm -rf "$datadir"
}
trap cleanup EXIT

"$install_db" --no-defaults --datadir="$datadir/data" "${run_as[@]}" --auth-root-authentication-method=socket \
  --skip-test-db >"$datadir/install.log" 2>&1 || { cat "$datadir/install.log" >&2; exit 1; }
server_args=("$server" --no-defaults --datadir="$datadir/data" --socket="$sock" --port="$port"
  --bind-address=127.0.0.1 --pid-file="$datadir/mysqld.pid" --skip-name-resolve
  --innodb-flush-log-at-trx-commit=2 --max-connections=500 "${run_as[@]}")
"${server_args[@]}" >"$datadir/server.log" 2>&1 &
pid=$!
for _ in $(seq 1 60); do
  "$client" --no-defaults -S "$sock" -u root -e "SELECT 1" >/dev/null 2>&1 && break
  sleep 0.5
done
"$client" --no-defaults -S "$sock" -u root <<SQL
CREATE DATABASE wallet_test CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE USER 'wallet'@'127.0.0.1' IDENTIFIED BY 'wallet-test';
GRANT ALL PRIVILEGES ON wallet_test.* TO 'wallet'@'127.0.0.1';
SQL
echo "MariaDB $("$client" --no-defaults -S "$sock" -u root -N -e 'SELECT VERSION()') on 127.0.0.1:$port"
export TEST_DATABASE_URL="mysql+pymysql://wallet:wallet-test@127.0.0.1:$port/wallet_test?charset=utf8mb4"
# For the test that stops and restarts the database under traffic:
export TEST_MARIADB_PIDFILE="$datadir/mysqld.pid"
TEST_MARIADB_COMMAND=$(printf '%q ' "${server_args[@]}")
export TEST_MARIADB_COMMAND
"$@"
