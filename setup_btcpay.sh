#!/usr/bin/env bash
# setup_btcpay.sh - run the local REGTEST BTCPay Server + LND stack (docker-compose.btcpay.yml)
# and print the settings the wallet app needs to use it.
#
#   ./setup_btcpay.sh start            start everything, create a miner wallet, mine 101 blocks
#   ./setup_btcpay.sh env >> .env      print LIGHTNING_BACKEND, BTCPAY_*, LND_* for the app
#
# Development only: regtest coins, fixed development passwords, no TLS on BTCPay.
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
COMPOSE_FILE="$SCRIPT_DIR/docker-compose.btcpay.yml"
PROJECT="${BTCPAY_COMPOSE_PROJECT:-ussd-wallet-btcpay}"

# Host ports: the compose file reads the same variables, keep the defaults in step.
BTCPAY_HOST_PORT="${BTCPAY_HOST_PORT:-49392}"
LND_REST_HOST_PORT="${LND_REST_HOST_PORT:-8080}"

# Paths inside the lnd container (official lightninglabs/lnd image, lnddir /root/.lnd).
LND_MACAROON_PATH=/root/.lnd/data/chain/bitcoin/regtest/admin.macaroon
LND_CERT_PATH=/root/.lnd/tls.cert
# Where `env` copies LND's certificate on the host: instance/ is git-ignored.
CERT_OUT_DIR="$SCRIPT_DIR/instance/lnd-regtest"

MINER_WALLET=miner
INITIAL_BLOCKS=101 # coinbase outputs mature after 100 blocks
WAIT_SECONDS=180

COMPOSE=() # set by require_compose: (docker compose) or (docker-compose)

usage() {
    cat <<EOF
Usage: $(basename "$0") COMMAND [ARG]

Local regtest stack for the wallet's btcpay and lnd backends:
bitcoind, NBXplorer, PostgreSQL, BTCPay Server and LND (docker-compose.btcpay.yml).

Commands:
  start           start the stack, create a bitcoind wallet, mine $INITIAL_BLOCKS blocks
  stop            stop and remove the containers (data volumes are kept)
  restart         stop, then start
  status          containers, block height, LND sync state, BTCPay health
  logs [SERVICE]  follow logs (services: bitcoind nbxplorer postgres lnd btcpayserver)
  mine [N]        mine N regtest blocks (default 1)
  env             print the wallet app's settings for this stack (append to .env)
  help            this message

BTCPay: http://127.0.0.1:$BTCPAY_HOST_PORT   LND REST: https://127.0.0.1:$LND_REST_HOST_PORT
Delete all regtest data: ${COMPOSE[*]:-docker compose} -p $PROJECT -f docker-compose.btcpay.yml down -v
EOF
}

die() {
    printf 'setup_btcpay.sh: error: %s\n' "$*" >&2
    exit 1
}

info() {
    printf '%s\n' "$*" >&2
}

require_compose() {
    command -v docker >/dev/null 2>&1 ||
        die "docker is not installed. Install Docker Engine (https://docs.docker.com/engine/install/) with the Compose plugin."
    if docker compose version >/dev/null 2>&1; then
        COMPOSE=(docker compose)
    elif command -v docker-compose >/dev/null 2>&1; then
        COMPOSE=(docker-compose)
    else
        die "Docker Compose is not available: neither 'docker compose' (the plugin) nor 'docker-compose' was found. Install the docker-compose-plugin package."
    fi
    docker info >/dev/null 2>&1 ||
        die "the Docker engine is not reachable. Is the daemon running, and may $(id -un) use it (docker group)?"
    [[ -f "$COMPOSE_FILE" ]] || die "missing $COMPOSE_FILE"
}

compose() {
    "${COMPOSE[@]}" -p "$PROJECT" -f "$COMPOSE_FILE" "$@"
}

# bitcoin-cli inside the container: /data/bitcoin.conf carries the regtest RPC settings.
bitcoin_cli() {
    compose exec -T bitcoind bitcoin-cli -datadir=/data "$@"
}

# wait_for DESCRIPTION COMMAND...: retry COMMAND (quietly) until it succeeds or WAIT_SECONDS pass.
wait_for() {
    local what=$1
    shift
    local waited=0
    info "waiting for $what ..."
    until "$@" >/dev/null 2>&1; do
        if ((waited >= WAIT_SECONDS)); then
            die "$what not ready after ${WAIT_SECONDS}s; see: $0 logs"
        fi
        sleep 3
        waited=$((waited + 3))
    done
}

ensure_miner_wallet() {
    if bitcoin_cli -rpcwallet="$MINER_WALLET" getwalletinfo >/dev/null 2>&1; then
        return 0
    fi
    if bitcoin_cli loadwallet "$MINER_WALLET" >/dev/null 2>&1; then
        return 0
    fi
    bitcoin_cli createwallet "$MINER_WALLET" >/dev/null
    info "created bitcoind wallet '$MINER_WALLET'"
}

mine_blocks() {
    local count=$1
    local address
    ensure_miner_wallet
    address=$(bitcoin_cli -rpcwallet="$MINER_WALLET" getnewaddress | tr -d '\r')
    bitcoin_cli generatetoaddress "$count" "$address" >/dev/null
    info "mined $count block(s); height is now $(bitcoin_cli getblockcount | tr -d '\r')"
}

lnd_macaroon_ready() {
    compose exec -T lnd test -s "$LND_MACAROON_PATH"
}

cmd_start() {
    info "starting the regtest stack (project $PROJECT) ..."
    compose up -d
    wait_for "bitcoind RPC" bitcoin_cli getblockchaininfo
    local height
    height=$(bitcoin_cli getblockcount | tr -d '\r')
    if ((height < INITIAL_BLOCKS)); then
        # LND only reports itself synced once the chain tip is recent, and spendable coins need
        # 100 confirmations: mine past both on a fresh chain.
        mine_blocks $((INITIAL_BLOCKS - height))
    else
        ensure_miner_wallet
    fi
    wait_for "LND (admin macaroon)" lnd_macaroon_ready
    cat >&2 <<EOF

Stack is up.
  BTCPay Server:  http://127.0.0.1:$BTCPAY_HOST_PORT  (first registered account becomes admin)
  LND REST:       https://127.0.0.1:$LND_REST_HOST_PORT
Next: $0 env    # prints the wallet settings and the BTCPay steps for the store and API key
EOF
}

cmd_stop() {
    info "stopping the regtest stack (volumes are kept) ..."
    compose down
}

cmd_status() {
    compose ps
    echo
    local height lnd_info health
    if height=$(bitcoin_cli getblockcount 2>/dev/null); then
        echo "bitcoind:  height $(printf '%s' "$height" | tr -d '\r')"
    else
        echo "bitcoind:  not reachable"
    fi
    # jq ships in the lnd image.
    if lnd_info=$(compose exec -T lnd sh -c \
        "lncli --network=regtest getinfo | jq -c '{alias, synced_to_chain, block_height, num_active_channels, num_peers}'" 2>/dev/null); then
        echo "lnd:       $lnd_info"
    else
        echo "lnd:       not reachable"
    fi
    local url="http://127.0.0.1:$BTCPAY_HOST_PORT/api/v1/health"
    if command -v curl >/dev/null 2>&1; then
        if health=$(curl -fsS --max-time 5 "$url" 2>/dev/null); then
            echo "btcpay:    $health"
        else
            echo "btcpay:    not answering at $url (it can take a minute after start)"
        fi
    else
        echo "btcpay:    (install curl to probe $url)"
    fi
}

cmd_logs() {
    if (($# > 0)); then
        compose logs -f --tail=200 "$1"
    else
        compose logs -f --tail=200
    fi
}

cmd_mine() {
    local count=${1:-1}
    [[ "$count" =~ ^[1-9][0-9]*$ ]] || die "mine: N must be a positive integer, got '$count'"
    wait_for "bitcoind RPC" bitcoin_cli getblockchaininfo
    mine_blocks "$count"
}

cmd_env() {
    lnd_macaroon_ready >/dev/null 2>&1 ||
        die "LND is not running or has no admin macaroon yet; run: $0 start"

    # The macaroon as hex, which the app's LND_MACAROON expects. od is POSIX, unlike xxd.
    local macaroon_hex
    if ! macaroon_hex=$(compose exec -T lnd cat "$LND_MACAROON_PATH" | od -An -v -tx1 | tr -d ' \n'); then
        die "could not read $LND_MACAROON_PATH from the lnd container"
    fi
    [[ "$macaroon_hex" =~ ^[0-9a-f]+$ ]] || die "the admin macaroon read from lnd is empty or garbled"

    mkdir -p "$CERT_OUT_DIR"
    local cert_file="$CERT_OUT_DIR/tls.cert"
    if ! compose exec -T lnd cat "$LND_CERT_PATH" >"$cert_file.tmp"; then
        rm -f "$cert_file.tmp"
        die "could not copy $LND_CERT_PATH from the lnd container"
    fi
    mv "$cert_file.tmp" "$cert_file"
    info "copied LND's TLS certificate to $cert_file"

    cat <<EOF
# --- Local regtest Lightning stack (generated by setup_btcpay.sh env) ---
LIGHTNING_BACKEND=btcpay
LIGHTNING_NETWORK=bcrt

# BTCPay Server (Greenfield API). The store ID and API key come from the web UI, once:
#  1. Open http://127.0.0.1:$BTCPAY_HOST_PORT and register: the first account is the server admin.
#  2. Create a store; its Store ID is under Settings > General -> BTCPAY_STORE_ID.
#  3. In the store: Wallets > Lightning > Use internal node (LND) > Save.
#  4. Account > API Keys > Generate Key (as the admin; only admins may use the internal node)
#     with these permissions for that store: btcpay.store.canuselightningnode,
#     btcpay.store.cancreatelightninginvoice, btcpay.store.canviewlightninginvoice,
#     btcpay.store.webhooks, plus btcpay.server.canuseinternallightningnode -> BTCPAY_API_KEY.
#  5. Optional webhook: Store > Settings > Webhooks, pointing at the app's BTCPay webhook
#     route under PUBLIC_URL; copy its secret -> BTCPAY_WEBHOOK_SECRET.
BTCPAY_URL=http://127.0.0.1:$BTCPAY_HOST_PORT
BTCPAY_STORE_ID=
BTCPAY_API_KEY=
BTCPAY_WEBHOOK_SECRET=
# BTCPay runs in Docker: it reaches an app on this host as host.docker.internal.
# PUBLIC_URL=http://host.docker.internal:5000

# LND REST directly (set LIGHTNING_BACKEND=lnd to use it instead of BTCPay).
LND_URL=https://127.0.0.1:$LND_REST_HOST_PORT
LND_MACAROON=$macaroon_hex
LND_TLS_CERT=$cert_file
EOF
}

main() {
    local command=${1:-help}
    (($# > 0)) && shift
    case "$command" in
    help | -h | --help)
        usage
        return 0
        ;;
    start | stop | restart | status | logs | mine | env) ;;
    *)
        usage >&2
        die "unknown command '$command'"
        ;;
    esac

    require_compose
    case "$command" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    restart)
        cmd_stop
        cmd_start
        ;;
    status) cmd_status ;;
    logs) cmd_logs "$@" ;;
    mine) cmd_mine "$@" ;;
    env) cmd_env ;;
    esac
}

main "$@"
