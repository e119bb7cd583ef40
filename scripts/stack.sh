#!/usr/bin/env bash
# The production topology from local processes, for people without Docker and for the tests:
# a throwaway MariaDB (Debian's), the migrations run once, two web instances (gunicorn, no
# background thread: WORKER_IN_PROCESS=0) and one worker (`flask worker`).
#   scripts/stack.sh              # start it, print the URLs, stop everything on Ctrl-C
#   scripts/stack.sh <command>    # start it, run the command (it sees STACK_WEB_URLS), stop it
# Settings: the embedded demo's (mock Lightning, simulated M-Pesa, demo users) unless exported.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}

if [ -z "${STACK_INSIDE:-}" ]; then  # first the database, then this script again inside it
  STACK_INSIDE=1 exec scripts/mariadb_local.sh "$0" "$@"
fi

port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }
export DATABASE_URL="$TEST_DATABASE_URL" AUTO_CREATE_SCHEMA=0 WORKER_IN_PROCESS=0
export DEMO_MODE="${DEMO_MODE:-1}" PIN_PEPPER="${PIN_PEPPER:-stack-pepper-not-for-production}" INVOICE_POLL_S="${INVOICE_POLL_S:-2}"
logs=$(mktemp -d /tmp/wallet-stack.XXXXXX)
pids=()
stop() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop EXIT

"$py" -m flask --app app db-upgrade >"$logs/migrate.log" 2>&1
"$py" -m flask --app app seed-demo >>"$logs/migrate.log" 2>&1
urls=()
for n in 1 2; do
  p=$(port)
  PUBLIC_URL="http://127.0.0.1:$p" PORT="$p" "$py" -m gunicorn -c gunicorn.conf.py --bind "127.0.0.1:$p" \
    --workers 2 "app:create_app()" >"$logs/web$n.log" 2>&1 &
  pids+=($!)
  urls+=("http://127.0.0.1:$p")
done
"$py" -m flask --app app worker >"$logs/worker.log" 2>&1 &
pids+=($!)
for url in "${urls[@]}"; do
  for _ in $(seq 1 60); do
    "$py" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + '/ready', timeout=2)" "$url" 2>/dev/null && break
    sleep 0.5
  done
done
export STACK_WEB_URLS="${urls[*]}" STACK_LOGS="$logs"
echo "stack: web ${urls[*]}, worker pid ${pids[-1]}, logs in $logs"
if [ $# -gt 0 ]; then
  "$@"
else
  echo "Ctrl-C stops everything"
  wait
fi
