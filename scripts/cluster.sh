#!/usr/bin/env bash
# A replicated compute-ledger on this machine: 3 clustered nats-servers (JetStream,
# sync_interval: always) and 3 `cledger serve --replicated` nodes, all on loopback.
#
#   scripts/cluster.sh up       start everything (idempotent: running parts are left alone)
#   scripts/cluster.sh status   each node's role, leader and head (GET /v1/cluster)
#   scripts/cluster.sh down     stop everything (the data stays in $CLUSTER_DIR)
#   scripts/cluster.sh clean    down, then delete $CLUSTER_DIR
#
# Nodes listen on 127.0.0.1:8181..8183, NATS clients on 4322..4324. Every node signs with
# the same checkpoint key ($CLUSTER_DIR/signing.key), so an auditor trusts one verifier key
# whichever node leads. README.md, "NATS", shows a failover by hand.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CLUSTER_DIR="${CLUSTER_DIR:-$ROOT/target/cluster}"
NATS_PORTS=(4322 4323 4324)
ROUTE_PORTS=(6322 6323 6324)
MONITOR_PORTS=(8322 8323 8324)
HTTP_PORTS=(8181 8182 8183)
LEASE_TTL_MS="${LEASE_TTL_MS:-3000}"

cledger_bin() {
    if [[ -n "${CLEDGER:-}" ]]; then echo "$CLEDGER"; return; fi
    for b in "$ROOT/target/release/cledger" "$ROOT/target/debug/cledger"; do
        if [[ -x "$b" ]]; then echo "$b"; return; fi
    done
    echo "no cledger binary: run \`cargo build --release -p api\` (or set CLEDGER=PATH)" >&2
    exit 1
}

nats_bin() {
    if command -v nats-server >/dev/null; then command -v nats-server; return; fi
    if [[ -x "$ROOT/.venv/bin/nats-server" ]]; then echo "$ROOT/.venv/bin/nats-server"; return; fi
    echo "no nats-server on PATH (scripts/test.sh installs one into .venv/bin)" >&2
    exit 1
}

running() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_http() {
    local url=$1 what=$2
    for _ in $(seq 1 150); do
        if curl -fsS -o /dev/null "$url" 2>/dev/null; then return 0; fi
        sleep 0.2
    done
    echo "$what did not come up ($url)" >&2
    return 1
}

up() {
    local nats cledger urls routes
    nats="$(nats_bin)"
    cledger="$(cledger_bin)"
    mkdir -p "$CLUSTER_DIR"
    routes=""
    for p in "${ROUTE_PORTS[@]}"; do routes+="\"nats-route://127.0.0.1:$p\", "; done
    for i in 0 1 2; do
        local n=$((i + 1)) dir="$CLUSTER_DIR/nats$((i + 1))"
        mkdir -p "$dir"
        cat >"$dir/nats.conf" <<EOF
server_name: n$n
listen: 127.0.0.1:${NATS_PORTS[$i]}
http: 127.0.0.1:${MONITOR_PORTS[$i]}
jetstream { store_dir: "$dir/jetstream", sync_interval: always }
cluster { name: cledger-local, listen: 127.0.0.1:${ROUTE_PORTS[$i]}, routes: [${routes%, }] }
EOF
        if ! running "$dir/pid"; then
            "$nats" -c "$dir/nats.conf" >>"$dir/nats.log" 2>&1 &
            echo $! >"$dir/pid"
        fi
    done
    for i in 0 1 2; do wait_http "http://127.0.0.1:${MONITOR_PORTS[$i]}/healthz?js-enabled-only=true" "nats-server n$((i + 1))"; done
    urls="$(printf 'nats://127.0.0.1:%s,' "${NATS_PORTS[@]}")"
    urls="${urls%,}"
    # One key for the cluster: whichever node leads signs with it.
    if [[ ! -f "$CLUSTER_DIR/signing.key" ]]; then
        (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$CLUSTER_DIR/signing.key"; echo >>"$CLUSTER_DIR/signing.key")
    fi
    for i in 0 1 2; do
        local dir="$CLUSTER_DIR/node$((i + 1))" port=${HTTP_PORTS[$i]}
        mkdir -p "$dir"
        if ! running "$dir/pid"; then
            "$cledger" serve --data "$dir/data" --listen "127.0.0.1:$port" --nats "$urls" --replicated \
                --advertise "http://127.0.0.1:$port" --signing-key "$CLUSTER_DIR/signing.key" \
                --lease-ttl-ms "$LEASE_TTL_MS" >>"$dir/stdout.log" 2>>"$dir/stderr.log" &
            echo $! >"$dir/pid"
        fi
    done
    for i in 0 1 2; do wait_http "http://127.0.0.1:${HTTP_PORTS[$i]}/healthz" "node$((i + 1))"; done
    echo "cluster up in $CLUSTER_DIR"
    status
}

SUMMARY='import json, sys
c = json.load(sys.stdin)
print("%-9s head %7d  lag %5d  leader %s" % (c["role"], c["head"], c.get("lag_events", 0), c["leader"]))'

status() {
    for i in 0 1 2; do
        local port=${HTTP_PORTS[$i]} n=$((i + 1))
        local pidfile="$CLUSTER_DIR/node$n/pid"
        local pid="-"
        running "$pidfile" && pid="$(cat "$pidfile")"
        local body
        body="$(curl -fsS -m 2 "http://127.0.0.1:$port/v1/cluster" 2>/dev/null || echo '')"
        if [[ -z "$body" ]]; then
            printf 'node%s  http://127.0.0.1:%s  pid %s  down\n' "$n" "$port" "$pid"
        else
            printf 'node%s  http://127.0.0.1:%s  pid %s  %s\n' "$n" "$port" "$pid" \
                "$(echo "$body" | python3 -c "$SUMMARY" 2>/dev/null || echo "$body")"
        fi
    done
    for i in 0 1 2; do
        local n=$((i + 1)) pid="-"
        running "$CLUSTER_DIR/nats$n/pid" && pid="$(cat "$CLUSTER_DIR/nats$n/pid")"
        printf 'nats%s  nats://127.0.0.1:%s  pid %s\n' "$n" "${NATS_PORTS[$i]}" "$pid"
    done
}

stop_pidfile() {
    local pidfile=$1
    if running "$pidfile"; then
        local pid
        pid="$(cat "$pidfile")"
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}

down() {
    for n in 1 2 3; do stop_pidfile "$CLUSTER_DIR/node$n/pid"; done
    for n in 1 2 3; do stop_pidfile "$CLUSTER_DIR/nats$n/pid"; done
    echo "cluster down (data kept in $CLUSTER_DIR)"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    clean) down; rm -rf "$CLUSTER_DIR" ;;
    *) echo "usage: $0 up|down|status|clean" >&2; exit 2 ;;
esac
