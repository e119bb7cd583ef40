#!/usr/bin/env bash
# A throwaway 3-node MariaDB Galera cluster on 127.0.0.1 (Debian's galera-4), run as the mysql
# user so rsync state transfer works; run a command against it, then stop it.
#   scripts/galera_local.sh <command...>
# The command sees GALERA_URLS (the three nodes' database URLs, space-separated),
# TEST_DATABASE_URL (node 1), and GALERA_NODE_<n>_{PIDFILE,COMMAND} to kill and restart a node.
set -euo pipefail

server=$(command -v mariadbd || command -v mysqld)
install_db=$(command -v mariadb-install-db || command -v mysql_install_db)
client=$(command -v mariadb || command -v mysql)
provider=/usr/lib/galera/libgalera_smm.so
[ -f "$provider" ] || { echo "galera-4 is not installed: apt-get install galera-4 rsync" >&2; exit 2; }
command -v rsync >/dev/null || { echo "rsync is not installed (Galera's state transfer): apt-get install rsync" >&2; exit 2; }

root=$(mktemp -d /tmp/wallet-galera.XXXXXX)
chmod 755 "$root"
# Twelve distinct free ports (SQL, group communication, IST and SST for each node), all held open
# while they are chosen so none is picked twice.
read -r -a ports <<<"$(python3 -c '
import socket
held = [socket.socket() for _ in range(12)]
for s in held:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in held))
')"
declare -a port gport ist sst
for n in 1 2 3; do
  i=$(( (n - 1) * 4 ))
  port[$n]=${ports[$i]}; gport[$n]=${ports[$((i + 1))]}; ist[$n]=${ports[$((i + 2))]}; sst[$n]=${ports[$((i + 3))]}
done
members="127.0.0.1:${gport[1]},127.0.0.1:${gport[2]},127.0.0.1:${gport[3]}"

cleanup() {
  for n in 1 2 3; do
    local p
    p=$(cat "$root/node$n/mysqld.pid" 2>/dev/null || true)
    [ -n "$p" ] && kill "$p" 2>/dev/null || true
  done
  sleep 2
  for n in 1 2 3; do
    local p
    p=$(cat "$root/node$n/mysqld.pid" 2>/dev/null || true)
    [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true
  done
  rm -rf "$root"
}
trap cleanup EXIT

node_args() {  # the server command line of node $1 ($2: extra arguments)
  local n=$1
  echo "$server --no-defaults --user=mysql --datadir=$root/node$n/data --socket=$root/node$n/mysqld.sock" \
    "--port=${port[$n]} --bind-address=127.0.0.1 --pid-file=$root/node$n/mysqld.pid --skip-name-resolve" \
    "--binlog-format=ROW --default-storage-engine=InnoDB --innodb-autoinc-lock-mode=2 --log-bin-trust-function-creators=1" \
    "--innodb-flush-log-at-trx-commit=2 --max-connections=300" \
    "--wsrep-on=ON --wsrep-provider=$provider --wsrep-cluster-name=wallet_test" \
    "--wsrep-cluster-address=gcomm://$members --wsrep-node-name=node$n --wsrep-node-address=127.0.0.1:${gport[$n]}" \
    "--wsrep-provider-options=gmcast.listen_addr=tcp://127.0.0.1:${gport[$n]};ist.recv_addr=127.0.0.1:${ist[$n]}" \
    "--wsrep-sst-method=rsync --wsrep-sst-receive-address=127.0.0.1:${sst[$n]}"
}

wait_up() {
  for _ in $(seq 1 120); do
    if "$client" --no-defaults -S "$root/node$1/mysqld.sock" -u root -N -e "SHOW STATUS LIKE 'wsrep_ready'" 2>/dev/null \
        | grep -q ON; then return 0; fi
    sleep 0.5
  done
  echo "node $1 did not become ready:" >&2; tail -30 "$root/node$1/server.log" >&2; return 1
}

for n in 1 2 3; do
  mkdir -p "$root/node$n"
  chown mysql:mysql "$root/node$n"
  "$install_db" --no-defaults --user=mysql --datadir="$root/node$n/data" --auth-root-authentication-method=socket \
    --skip-test-db >"$root/node$n/install.log" 2>&1 || { cat "$root/node$n/install.log" >&2; exit 1; }
done
# node 1 starts a new cluster; the others join it
# shellcheck disable=SC2046
$(node_args 1) --wsrep-new-cluster >"$root/node1/server.log" 2>&1 &
wait_up 1
for n in 2 3; do
  # shellcheck disable=SC2046
  $(node_args $n) >"$root/node$n/server.log" 2>&1 &
  wait_up $n
done
"$client" --no-defaults -S "$root/node1/mysqld.sock" -u root <<SQL
CREATE DATABASE wallet_test CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE USER 'wallet'@'127.0.0.1' IDENTIFIED BY 'wallet-test';
GRANT ALL PRIVILEGES ON wallet_test.* TO 'wallet'@'127.0.0.1';
SQL
size=$("$client" --no-defaults -S "$root/node1/mysqld.sock" -u root -N -e "SHOW STATUS LIKE 'wsrep_cluster_size'" | cut -f2)
echo "MariaDB Galera: $size nodes on 127.0.0.1 ports ${port[1]} ${port[2]} ${port[3]}"
urls=""
for n in 1 2 3; do
  urls="$urls mysql+pymysql://wallet:wallet-test@127.0.0.1:${port[$n]}/wallet_test?charset=utf8mb4"
  export "GALERA_NODE_${n}_PIDFILE=$root/node$n/mysqld.pid"
  export "GALERA_NODE_${n}_COMMAND=$(node_args $n)"
done
export GALERA_URLS="${urls# }"
export TEST_DATABASE_URL="${GALERA_URLS%% *}"
"$@"
