#!/usr/bin/env bash
# Issue 14, "Bounded memory": the agent's RSS with CONNECTIONS SPOP connections open
# (after HELLO), TOKENS distinct tokens in its verified-token cache and an ENTITIES-
# entity catalog file. Goal: 150 MB or less. Not in CI; figures in BENCHMARKS.md,
# "Issue 14: memory".
# The catalog (one Group, ENTITIES Components each with one route `GET /svc<i>/items
# read`) and the config (the quickstart issuer and its demo JWKS, ES256; cache for
# 131 072 tokens; max_connections above CONNECTIONS; decision log off) are made in a
# temp dir. examples/memory_load opens the connections, mints the tokens with the
# quickstart's demo key and sends each once in a NOTIFY (see its doc comment).
# RSS (VmRSS) and its peak (VmHWM) are read from /proc/PID/status: after start-up
# with the catalog, after the connections, after the tokens.
# Usage: [CONNECTIONS=10000] [TOKENS=100000] [ENTITIES=10000] [STAGEDOOR_BIN=path]
#        benches/memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CONNECTIONS=${CONNECTIONS:-10000}
TOKENS=${TOKENS:-100000}
ENTITIES=${ENTITIES:-10000}
cargo build --release --locked -q --bin stagedoor --example memory_load
tdir=${CARGO_TARGET_DIR:-target}
BIN=${STAGEDOOR_BIN:-$tdir/release/stagedoor}
LOAD=$tdir/release/examples/memory_load
tmp=$(mktemp -d)
agent_pid=
load_pid=
cleanup() {
    [ -z "$load_pid" ] || kill "$load_pid" 2>/dev/null || true
    [ -z "$agent_pid" ] || kill "$agent_pid" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
admin=$(free_port)

{
    printf 'apiVersion: backstage.io/v1alpha1\nkind: Group\nmetadata:\n  name: platform\nspec:\n  type: team\n  children: []\n'
    for ((i = 0; i < ENTITIES; i++)); do
        printf -- '---\napiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: svc%d\n  annotations:\n    stagedoor.io/routes: |\n      GET /svc%d/items read\nspec:\n  type: service\n  lifecycle: production\n  owner: platform\n' "$i" "$i"
    done
} >"$tmp/catalog.yaml"
cat >"$tmp/stagedoor.toml" <<TOML
[agent]
listen = "127.0.0.1:$port"
max_connections = $((CONNECTIONS + 1000))
[admin]
listen = "127.0.0.1:$admin"
[log]
decisions = "off"
[token]
cache_entries = 131072
[[issuers]]
issuer = "https://idp.quickstart.example"
audiences = ["quickstart-api"]
jwks_file = "$PWD/examples/quickstart/demo-jwks.json"
algorithms = ["ES256"]
[catalog]
source = "file"
files = ["$tmp/catalog.yaml"]
TOML

"$BIN" serve --config "$tmp/stagedoor.toml" >"$tmp/agent.out" 2>"$tmp/agent.err" &
agent_pid=$!
for _ in $(seq 1 600); do
    curl -fs "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fs "http://127.0.0.1:$admin/readyz" >/dev/null || { cat "$tmp/agent.err"; exit 1; }
metric() { curl -fs "http://127.0.0.1:$admin/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
mem() {
    local rss hwm
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$agent_pid/status")
    hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$agent_pid/status")
    printf '%-34s RSS %7.1f MB   peak %7.1f MB   conns %s  cache entries %s  buffers %s B  entities %s\n' \
        "$1" "$(echo "$rss / 1024" | bc -l)" "$(echo "$hwm / 1024" | bc -l)" \
        "$(metric stagedoor_spop_connections_open)" "$(metric stagedoor_token_cache_entries)" \
        "$(metric stagedoor_spop_buffer_bytes)" "$(metric stagedoor_catalog_entities)"
}
echo "== stagedoor $("$BIN" --version 2>/dev/null || true); $CONNECTIONS connections, $TOKENS tokens, $ENTITIES entities"
mem "started, catalog loaded"
"$LOAD" --agent "127.0.0.1:$port" --connections "$CONNECTIONS" --tokens "$TOKENS" \
    --entities "$ENTITIES" --hold-seconds 600 --pause-seconds 5 >"$tmp/load.out" 2>&1 &
load_pid=$!
until grep -q '^connected' "$tmp/load.out"; do
    kill -0 "$load_pid" 2>/dev/null || { cat "$tmp/load.out"; exit 1; }
    sleep 0.2
done
sleep 2
mem "+ connections (after HELLO)"
until grep -q '^ready' "$tmp/load.out"; do
    kill -0 "$load_pid" 2>/dev/null || { cat "$tmp/load.out"; exit 1; }
    sleep 0.5
done
sleep 1
mem "+ tokens sent (cache filled)"
grep '^ready' "$tmp/load.out"
