#!/usr/bin/env bash
# Issue 14: a soak through HAProxy 2.6 (Debian's `haproxy`) with modest load, sampling
# the agent's RSS and open files every INTERVAL seconds into a CSV. Not in CI; the
# 30-minute curve is recorded in BENCHMARKS.md, "Issue 14: memory".
# Load: wrk, CONNECTIONS connections (default 4), each pausing DELAY_MS (default 5)
# between requests, GET /api/orders through the shipped haproxy.cfg + the quickstart
# echo backend, cycling through five Authorization headers: three good tokens
# (alice, 200; bob, 403: not in the route's groups; alice with a scope that does not
# match, 403), a token with a broken signature (401) and none (401). The tokens are
# minted with the quickstart's demo key (examples/mint_token). The agent runs the
# quickstart config (ports rewritten, decision log discarded).
# CSV columns: seconds since start, VmRSS kB, open files, SPOP connections open,
# buffer bytes (stagedoor_spop_buffer_bytes), token cache entries, decisions total.
# Usage: [DURATION=1800] [INTERVAL=10] [CONNECTIONS=4] [DELAY_MS=5] [OUT=soak.csv]
#        [STAGEDOOR_BIN=path] benches/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${DURATION:-1800}
interval=${INTERVAL:-10}
conns=${CONNECTIONS:-4}
delay=${DELAY_MS:-5}
out=${OUT:-soak.csv}
command -v wrk >/dev/null || { echo "needs wrk (apt-get install -y wrk)" >&2; exit 1; }
command -v haproxy >/dev/null || { echo "needs haproxy (apt-get install -y haproxy)" >&2; exit 1; }
cargo build -q --release --bin stagedoor --example mint_token
tdir=${CARGO_TARGET_DIR:-target}
agent_bin=${STAGEDOOR_BIN:-$tdir/release/stagedoor}
mint=$tdir/release/examples/mint_token

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

ap=$(port); adm=$(port); fe=$(port); be=$(port)
sed -e "s|^listen = \"127.0.0.1:12345\"|listen = \"127.0.0.1:$ap\"|" \
    -e "s|^listen = \"127.0.0.1:9901\"|listen = \"127.0.0.1:$adm\"|" \
    -e "s|\"catalog/|\"$PWD/examples/quickstart/catalog/|; s|\"demo-jwks.json\"|\"$PWD/examples/quickstart/demo-jwks.json\"|" \
    examples/quickstart/stagedoor.toml >"$work/stagedoor.toml"
grep -q "127.0.0.1:$ap" "$work/stagedoor.toml" || { echo "could not rewrite the config" >&2; exit 1; }
"$agent_bin" serve --config "$work/stagedoor.toml" >/dev/null 2>"$work/agent.log" &
agent=$!
pids+=($!)
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$adm/readyz" >/dev/null && break; sleep 0.1; done
curl -fs "http://127.0.0.1:$adm/readyz" >/dev/null || { cat "$work/agent.log" >&2; exit 1; }

STAGEDOOR_FRONTEND=127.0.0.1:$fe STAGEDOOR_AGENT=127.0.0.1:$ap STAGEDOOR_BACKEND=127.0.0.1:$be \
    STAGEDOOR_SPOE_CONF=$PWD/haproxy/stagedoor.spoe.conf \
    haproxy -db -f haproxy/haproxy.cfg -f examples/quickstart/echo-backend.cfg >/dev/null 2>"$work/haproxy.log" &
pids+=($!)
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$fe/" && break; sleep 0.1; done

alice=$("$mint" --sub alice --scope orders:read --ttl $((duration + 3600)))
bob=$("$mint" --sub bob --scope orders:read --ttl $((duration + 3600)))
wrong=$("$mint" --sub alice --scope orders:write --ttl $((duration + 3600)))
# The signature's 11th character changed: a signature that does not verify.
sig=${alice##*.}
broken="${alice%.*}.${sig:0:10}$([ "${sig:10:1}" = A ] && echo B || echo A)${sig:11}"
cat >"$work/soak.lua" <<LUA
local auth = { "Bearer $alice", "Bearer $bob", "Bearer $wrong", "Bearer $broken", "" }
local i = 0
request = function()
  i = i % #auth + 1
  local h = {}
  if auth[i] ~= "" then h["Authorization"] = auth[i] end
  return wrk.format("GET", "/api/orders", h)
end
delay = function() return $delay end
LUA

metric() { curl -fs "http://127.0.0.1:$adm/metrics" | awk -v m="$1" '$1 == m { s += $2 } $1 ~ "^"m"\\{" { s += $2 } END { print s + 0 }'; }
sample() {
    printf '%s,%s,%s,%s,%s,%s,%s\n' "$1" \
        "$(awk '/^VmRSS:/ { print $2 }' "/proc/$agent/status")" \
        "$(ls "/proc/$agent/fd" | wc -l)" \
        "$(metric stagedoor_spop_connections_open)" \
        "$(metric stagedoor_spop_buffer_bytes)" \
        "$(metric stagedoor_token_cache_entries)" \
        "$(metric stagedoor_decisions_total)"
}
echo "seconds,rss_kb,fds,spop_connections,buffer_bytes,cache_entries,decisions" >"$out"
sample 0 >>"$out"
wrk -t1 -c"$conns" -d"${duration}s" --latency -s "$work/soak.lua" "http://127.0.0.1:$fe/" >"$work/wrk.out" 2>&1 &
wrk_pid=$!
pids+=($!)
start=$(date +%s)
while kill -0 "$wrk_pid" 2>/dev/null; do
    sleep "$interval"
    kill -0 "$agent" 2>/dev/null || { echo "the agent died" >&2; cat "$work/agent.log" >&2; exit 1; }
    sample $(($(date +%s) - start)) >>"$out"
done
wait "$wrk_pid" || true
cat "$work/wrk.out"
echo "== decisions by reason"
curl -fs "http://127.0.0.1:$adm/metrics" | grep '^stagedoor_decisions_total' || true
echo "== $out: $(($(wc -l <"$out") - 1)) samples"
awk -F, 'NR == 2 { r0 = $2; f0 = $3 } NR > 1 { if ($2 > rmax) rmax = $2; if (rmin == "" || $2 < rmin) rmin = $2; if ($3 > fmax) fmax = $3; r = $2; f = $3 }
    END { printf "RSS kB: first %d, min %d, max %d, last %d; fds: first %d, max %d, last %d\n", r0, rmin, rmax, r, f0, fmax, f }' "$out"
