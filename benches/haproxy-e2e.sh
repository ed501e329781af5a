#!/usr/bin/env bash
# End-to-end cost per request through real HAProxy, 2.6 (Debian 12), 3.0 (Debian 13)
# and 3.x (Debian unstable; see tests/peers/haproxy3*/fetch.sh), side by side in one
# run: wrk against
#   baseline  the shipped haproxy.cfg without the SPOE filter and its decision rules
#             (HAProxy -> the quickstart echo backend; same log-format, logs discarded)
#   allow     the shipped haproxy.cfg + stagedoor (quickstart config, decision log on),
#             a valid RS256 token on a scoped, group-restricted route: 200
#   deny      the same without a token: 401 with WWW-Authenticate
#   session   the same caller as a browser: no token, a session cookie ([sso] on, the
#             cookie sealed by examples/mint_session with the agent's key), Accept
#             text/html: 200, stagedoor's cookie taken out before the backend
# Everything shares the machine's cores (unpinned); read the ratios, not the absolutes.
# Usage: [WORKER_THREADS=n] [VERSIONS="2.6 3.0 3"] benches/haproxy-e2e.sh [seconds per run, default 10] [wrk connections, default 50]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-50}
command -v wrk >/dev/null || { echo "needs wrk (apt-get install -y wrk)" >&2; exit 1; }
tests/peers/haproxy3/fetch.sh >/dev/null
tests/peers/haproxy30/fetch.sh >/dev/null
cargo build -q --release --bin stagedoor --example mint_token --example mint_session
agent_bin=${STAGEDOOR_BIN:-target/release/stagedoor}   # STAGEDOOR_BIN: compare two builds
token=$(target/release/examples/mint_token --sub alice --scope orders:read)
sso_key=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
session=$(target/release/examples/mint_session --key-hex "$sso_key" --sub alice --scope orders:read)

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

agent_port=$(port)
admin_port=$(port)
sed -e "s|^listen = \"127.0.0.1:12345\"|listen = \"127.0.0.1:$agent_port\"|" \
    -e "s|^listen = \"127.0.0.1:9901\"|listen = \"127.0.0.1:$admin_port\"|" \
    examples/quickstart/stagedoor.toml >"$work/stagedoor.toml"
grep -q "127.0.0.1:$agent_port" "$work/stagedoor.toml" || { echo "could not rewrite the agent port" >&2; exit 1; }
# WORKER_THREADS=n sets [agent] worker_threads (default: the config's, one per CPU).
if [ -n "${WORKER_THREADS:-}" ]; then
    sed -i "/^listen = \"127.0.0.1:$agent_port\"/a worker_threads = $WORKER_THREADS" "$work/stagedoor.toml"
    grep -q "^worker_threads = $WORKER_THREADS" "$work/stagedoor.toml"
    echo "== [agent] worker_threads = $WORKER_THREADS"
fi
# Browser sign-in on (its listener is not used here; the session cookie is minted).
sign_in_port=$(port)
printf '\n[sso]\nlisten = "127.0.0.1:%s"\nissuer = "https://idp.quickstart.example"\nclient_id = "stagedoor"\nclient_secret_env = "BENCH_SSO_SECRET"\nkeys_env = "BENCH_SSO_KEYS"\nexternal_scheme = "http"\ncookie_secure = false\n' \
    "$sign_in_port" >>"$work/stagedoor.toml"
# The catalog path is relative to the config file: point it back at the quickstart's.
sed -i "s|\"catalog/|\"$PWD/examples/quickstart/catalog/|; s|\"demo-jwks.json\"|\"$PWD/examples/quickstart/demo-jwks.json\"|" "$work/stagedoor.toml"
BENCH_SSO_KEYS=$sso_key BENCH_SSO_SECRET=unused \
    "$agent_bin" serve --config "$work/stagedoor.toml" >/dev/null 2>"$work/agent.log" &
agent=$!
pids+=($agent)
# CPU time (user + system, clock ticks) of a process, from /proc.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$admin_port/readyz" >/dev/null && break; sleep 0.1; done
curl -fs "http://127.0.0.1:$admin_port/readyz" >/dev/null || { cat "$work/agent.log" >&2; exit 1; }

# The baseline: the same file without the filter and the decision rules.
grep -v -e "filter spoe" -e "http-request return status" haproxy/haproxy.cfg >"$work/baseline.cfg"

run() { # name haproxy-binary config expected-status [header ...]
    local name=$1 bin=$2 cfg=$3 want=$4
    local -a hdrs=()
    for h in "${@:5}"; do hdrs+=(-H "$h"); done
    local fe be
    fe=$(port); be=$(port)
    STAGEDOOR_FRONTEND=127.0.0.1:$fe STAGEDOOR_BACKEND=127.0.0.1:$be \
    STAGEDOOR_AGENT=127.0.0.1:$agent_port STAGEDOOR_SPOE_CONF=$PWD/haproxy/stagedoor.spoe.conf \
        "$bin" -db -f "$cfg" -f examples/quickstart/echo-backend.cfg >/dev/null 2>&1 &
    local hap=$!
    for _ in $(seq 100); do
        code=$(curl -s -o /dev/null -w '%{http_code}' "${hdrs[@]}" "http://127.0.0.1:$fe/api/orders" || true)
        [ "$code" = "$want" ] && break
        sleep 0.1
    done
    [ "$code" = "$want" ] || { echo "$name: got $code, want $want" >&2; kill $hap; exit 1; }
    local out before after
    before=$(cpu_ticks "$agent")
    out=$(timeout $((secs + 15)) wrk -t2 -c"$conns" -d"${secs}s" --latency \
        "${hdrs[@]}" "http://127.0.0.1:$fe/api/orders")
    after=$(cpu_ticks "$agent")
    kill $hap; wait $hap 2>/dev/null || true
    local rps p50 p99 non2xx total agent_us
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p50=$(awk '$1=="50%" {print $2}' <<<"$out")
    p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
    total=$(awk '/requests in/ {print $1}' <<<"$out")
    # The agent's CPU per request (includes the decision log line and the health checks).
    agent_us=$(awk -v t="$((after - before))" -v hz="$hz" -v n="$total" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
    printf '%-28s %10s req/s  p50 %-8s p99 %-8s non-2xx %-8s agent CPU %s us/req\n' \
        "$name" "$rps" "$p50" "$p99" "${non2xx:-0}" "$agent_us"
}

for v in ${VERSIONS:-2.6 3.0 3}; do
    case $v in
    2.6) bin=$(command -v haproxy) ;;
    3.0) bin=tests/peers/haproxy30/haproxy ;;
    *) bin=tests/peers/haproxy3/haproxy ;;
    esac
    echo "== $("$bin" -v | sed -n 1p)"
    run "haproxy $v baseline" "$bin" "$work/baseline.cfg" 200
    run "haproxy $v + stagedoor allow" "$bin" haproxy/haproxy.cfg 200 "Authorization: Bearer $token"
    run "haproxy $v + stagedoor session" "$bin" haproxy/haproxy.cfg 200 "Cookie: theme=dark; $session" \
        "Accept: text/html,application/xhtml+xml,*/*;q=0.8"
    run "haproxy $v + stagedoor deny" "$bin" haproxy/haproxy.cfg 401
done
curl -s "http://127.0.0.1:$admin_port/metrics" | grep -E "^stagedoor_(decisions_total|spop_protocol_errors_total|token_cache_(hits|misses)_total)" | grep -v " 0$" || true
