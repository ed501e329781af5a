#!/usr/bin/env bash
# End-to-end cost per request through real HAProxy, 2.6 (Debian 12), 3.0 (Debian 13)
# and 3.x (Debian unstable; see tests/peers/haproxy3*/fetch.sh), side by side in one
# run: wrk against these rows (ROWS picks and orders them; issue 14's table):
#   baseline  the shipped haproxy.cfg without the SPOE filter and its decision rules
#             (HAProxy -> the quickstart echo backend; same log-format, logs discarded)
#   native    the baseline plus HAProxy's own jwt_verify RS256 on the bearer token
#             (signature only: no claim, no policy), same echo backend
#   noop      the shipped haproxy.cfg + examples/noop_agent: stagedoor's SPOP codec and
#             engine ACKing allow=true, status=200 and nothing else (the SPOE ceiling)
#   noopvars  noop also setting the five variables stagedoor sets for this request
#             (reason, sub, scopes, entity, owner; canned): HAProxy's own work on
#             stagedoor's answer (identity headers to the backend) inside the ceiling
#   warm      the shipped haproxy.cfg + stagedoor (quickstart config, decision log on),
#             one repeated RS256 token on a scoped, group-restricted route: 200, token
#             cache hits
#   fresh     the same with [token] cache_entries = 0: a full verification per request
#   quiet     warm with [log] decisions = "off": what the decision log costs
#   paths, paths0  the warm agent (paths0: BEFORE_BIN's), the same token on 1,000
#             paths of the same route in turn (/api/orders/item-N, a wrk script):
#             a caller that never repeats its request line, so each decision is
#             made afresh after the token (the remembered decisions always miss)
#   session   the warm agent, the caller as a browser: no token, a session cookie ([sso]
#             on, the cookie sealed by examples/mint_session with the agent's key),
#             Accept text/html: 200, stagedoor's cookie taken out before the backend
#   deny      the warm agent without a token: 401 with WWW-Authenticate
#   warm0, fresh0  warm and fresh on a second stagedoor binary, BEFORE_BIN (e.g. built
#             from main), to measure a change before/after in one interleaved run
#   a+b       rows a and b at the same time (e.g. noop+warm, native+fresh): two HAProxy
#             processes sharing HAProxy's CPU, two wrk sharing wrk's, one measured
#             window; reported as a@a+b and b@a+b, with b / a per round (see pair())
# The RS256 key pair is made here (openssl, RSA-2048, kid bench-rs-1) in the temp dir;
# its JWKS holds it beside the quickstart's ES256 demo key, and the token (sub alice,
# scope orders:read, the quickstart's iss and aud) is signed with openssl.
# Rounds are interleaved: a-b-c-... then ...-c-b-a (ROUNDS of them, default 2), each
# run WARMUP seconds of wrk (default 2) and then the measured run; the table is the
# median of the rounds, and the goals' ratios are also given round by round with their
# median (the rows of one round ran side by side). "agent CPU" is the agent's utime +
# stime (/proc) over the run divided by the requests wrk completed (health checks and
# the decision log included). "HAProxy busy" is HAProxy's CPU time over the run's
# seconds (near 1.00: HAProxy, pinned, was the limit; its CPU per request is then what
# sets req/s), and "agent sockets" the agent's open sockets at the end of the run
# (HAProxy 2.6 keeps the SPOE connections it opened in a burst).
# Pinning (default on 2+ CPUs): HAProxy on HAPROXY_CPU (default 0) with nbthread 1,
# wrk on WRK_CPU (default 1, one wrk thread); the agents unpinned unless AGENT_CPU is
# set (a taskset list, e.g. 1 or 0,1). HAPROXY_CPU= WRK_CPU= (empty) unpins both.
# Usage: [VERSIONS="2.6 3.0 3"] [ROWS="..."] [ROUNDS=2] [WARMUP=2] [WORKER_THREADS=n]
#        [HAPROXY_CPU=0] [WRK_CPU=1] [AGENT_CPU=] [STAGEDOOR_BIN=path] [BEFORE_BIN=path]
#        [SPOE_CONF=path: another SPOE file in place of haproxy/stagedoor.spoe.conf]
#        [HAPROXY_CFG=path: another HAProxy file in place of haproxy/haproxy.cfg]
#        [NO_BUILD=1] [PERF_DIR=dir: `perf record --call-graph dwarf` (PERF_CALLGRAPH) each agent over each measured run, into
#         dir/<version>.<row>.<round>.data]
#        benches/haproxy-e2e.sh [seconds per run, default 10] [wrk connections, default 50]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-50}
rounds=${ROUNDS:-2}
warmup=${WARMUP:-2}
rows=${ROWS:-baseline native noop warm fresh session deny}
if [ "$(nproc)" -ge 2 ]; then def_hap=0 def_wrk=1; else def_hap= def_wrk=; fi
hap_cpu=${HAPROXY_CPU-$def_hap}
wrk_cpu=${WRK_CPU-$def_wrk}
agent_cpu=${AGENT_CPU:-}
hap_cfg=${HAPROXY_CFG:-haproxy/haproxy.cfg}   # HAPROXY_CFG: another frontend file
command -v wrk >/dev/null || { echo "needs wrk (apt-get install -y wrk)" >&2; exit 1; }
command -v openssl >/dev/null || { echo "needs openssl" >&2; exit 1; }
tests/peers/haproxy3/fetch.sh >/dev/null
tests/peers/haproxy30/fetch.sh >/dev/null
# NO_BUILD=1: use the binaries already in $CARGO_TARGET_DIR/release (e.g. copies of
# builds made with another profile) as they are.
[ -n "${NO_BUILD:-}" ] || cargo build -q --release --bin stagedoor --example mint_session --example noop_agent
tdir=${CARGO_TARGET_DIR:-target}
agent_bin=${STAGEDOOR_BIN:-$tdir/release/stagedoor}   # STAGEDOOR_BIN: compare two builds
before_bin=${BEFORE_BIN:-}   # the warm0 and fresh0 rows
perf_dir=${PERF_DIR:-}
[ -z "$perf_dir" ] || mkdir -p "$perf_dir"
noop_bin=$tdir/release/examples/noop_agent
pin() { if [ -n "$1" ]; then echo taskset -c "$1"; fi; }
read -ra hap_pin <<<"$(pin "$hap_cpu")"
read -ra wrk_pin <<<"$(pin "$wrk_cpu")"
read -ra agent_pin <<<"$(pin "$agent_cpu")"
wrk_threads=$([ -n "$wrk_cpu" ] && echo 1 || echo 2)

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# The RS256 key pair, its JWKS (beside the quickstart's ES256 key) and the token.
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/rs.key.pem" 2>/dev/null
openssl pkey -in "$work/rs.key.pem" -pubout -out "$work/rs.pub.pem"
token=$(python3 - "$work" "$PWD/examples/quickstart/demo-jwks.json" <<'EOF'
import base64, json, subprocess, sys, time
work, demo = sys.argv[1], sys.argv[2]
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
mod = subprocess.run(["openssl", "pkey", "-pubin", "-in", f"{work}/rs.pub.pem", "-noout", "-text"],
                     check=True, capture_output=True, text=True).stdout
hexmod = "".join(l.strip() for l in mod.split("Modulus:")[1].split("Exponent:")[0].splitlines()).replace(":", "")
n = bytes.fromhex(hexmod).lstrip(b"\0")
jwks = json.load(open(demo))
jwks["keys"].append({"kty": "RSA", "n": b64(n), "e": "AQAB", "kid": "bench-rs-1", "alg": "RS256", "use": "sig"})
json.dump(jwks, open(f"{work}/jwks.json", "w"))
now = int(time.time())
head = b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "bench-rs-1"}).encode())
body = b64(json.dumps({"iss": "https://idp.quickstart.example", "sub": "alice", "aud": "quickstart-api",
                       "iat": now, "exp": now + 3600, "scope": "orders:read", "groups": []}).encode())
sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", f"{work}/rs.key.pem"],
                     input=f"{head}.{body}".encode(), check=True, capture_output=True).stdout
print(f"{head}.{body}.{b64(sig)}")
EOF
)
sso_key=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
session=$("$tdir/release/examples/mint_session" --key-hex "$sso_key" --sub alice --scope orders:read)

# CPU time (user + system, clock ticks) of a process, from /proc.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
declare -A agent_pid agent_port admin_port

# A stagedoor on the quickstart config, RS256 allowed, [sso] on: name [extra toml] [binary].
start_stagedoor() {
    local name=$1 extra=${2:-} bin=${3:-$agent_bin} edit=${4:-} cfg=$work/$1.toml ap adm sp
    ap=$(port); adm=$(port); sp=$(port)
    sed -e "s|^listen = \"127.0.0.1:12345\"|listen = \"127.0.0.1:$ap\"|" \
        -e "s|^listen = \"127.0.0.1:9901\"|listen = \"127.0.0.1:$adm\"|" \
        -e "s|^algorithms = \\[\"ES256\"\\]|algorithms = [\"ES256\", \"RS256\"]|" \
        -e "s|\"catalog/|\"$PWD/examples/quickstart/catalog/|; s|\"demo-jwks.json\"|\"$work/jwks.json\"|" \
        examples/quickstart/stagedoor.toml >"$cfg"
    grep -q "127.0.0.1:$ap" "$cfg" && grep -q '"RS256"' "$cfg" || { echo "could not rewrite $cfg" >&2; exit 1; }
    if [ -n "$edit" ]; then
        sed -i "$edit" "$cfg"
    fi
    # WORKER_THREADS=n sets [agent] worker_threads (default: the config's 0, half the CPUs).
    if [ -n "${WORKER_THREADS:-}" ]; then
        sed -i "/^listen = \"127.0.0.1:$ap\"/a worker_threads = $WORKER_THREADS" "$cfg"
    fi
    # Browser sign-in on (its listener is not used here; the session cookie is minted).
    printf '\n[sso]\nlisten = "127.0.0.1:%s"\nissuer = "https://idp.quickstart.example"\nclient_id = "stagedoor"\nclient_secret_env = "BENCH_SSO_SECRET"\nkeys_env = "BENCH_SSO_KEYS"\nexternal_scheme = "http"\ncookie_secure = false\n%s' \
        "$sp" "$extra" >>"$cfg"
    BENCH_SSO_KEYS=$sso_key BENCH_SSO_SECRET=unused \
        "${agent_pin[@]}" "$bin" serve --config "$cfg" >/dev/null 2>"$work/$name.log" &
    agent_pid[$name]=$!; agent_port[$name]=$ap; admin_port[$name]=$adm
    pids+=($!)
    for _ in $(seq 100); do curl -fs "http://127.0.0.1:$adm/readyz" >/dev/null && return; sleep 0.1; done
    cat "$work/$name.log" >&2; exit 1
}
start_stagedoor warm
start_stagedoor fresh $'\n[token]\ncache_entries = 0\n'
if [[ " ${rows//+/ } " == *" quiet "* ]]; then
    start_stagedoor quiet "" "" 's/^decisions = "all"/decisions = "off"/'
    grep -q '^decisions = "off"' "$work/quiet.toml" || { echo "could not turn the log off" >&2; exit 1; }
fi
if [ -n "$before_bin" ]; then
    start_stagedoor warm0 "" "$before_bin"
    start_stagedoor fresh0 $'\n[token]\ncache_entries = 0\n' "$before_bin"
fi
agent_port[noop]=$(port)
"${agent_pin[@]}" "$noop_bin" --listen "127.0.0.1:${agent_port[noop]}" \
    --worker-threads "${WORKER_THREADS:-0}" 2>"$work/noop.log" &
agent_pid[noop]=$!
pids+=($!)
if [[ " ${rows//+/ } " == *" noopvars "* ]]; then
    agent_port[noopvars]=$(port)
    "${agent_pin[@]}" "$noop_bin" --listen "127.0.0.1:${agent_port[noopvars]}" --stagedoor-vars \
        --worker-threads "${WORKER_THREADS:-0}" 2>"$work/noopvars.log" &
    agent_pid[noopvars]=$!
    pids+=($!)
fi

# The baseline: the same file without the filter, its retry and the decision rules; native: the
# baseline with jwt_verify where the filter was (the key path is literal: loaded at init).
grep -v -e "filter spoe" -e "send-spoe-group" -e "http-request return status" "$hap_cfg" >"$work/baseline.cfg"
awk -v key="$work/rs.pub.pem" '
    /filter spoe/ {
        print "    http-request set-var(txn.bearer) http_auth_bearer"
        print "    http-request deny deny_status 401 unless { var(txn.bearer),jwt_verify(\"RS256\",\"" key "\") -m int 1 }"
        next
    }
    /http-request return status/ || /send-spoe-group/ { next }
    { print }' "$hap_cfg" >"$work/native.cfg"
# The paths rows: 1,000 paths under /api/orders in turn (wrk keeps the -H headers).
cat >"$work/paths.lua" <<'LUA'
local n = 0
request = function()
    n = (n + 1) % 1000
    return wrk.format(nil, "/api/orders/item-" .. n)
end
LUA
# Pinned HAProxy runs one thread (a second global section adds to the first).
printf 'global\n' >"$work/threads.cfg"
[ -n "$hap_cpu" ] && printf '    nbthread 1\n' >>"$work/threads.cfg"

# µs from a wrk latency ("850.00us", "1.23ms", "1.02s").
to_us() { awk -v v="$1" 'BEGIN { u = v; sub(/[0-9.]+/, "", u); x = v + 0;
    print (u == "us" ? x : u == "ms" ? x * 1000 : u == "s" ? x * 1e6 : x * 6e7) }'; }

run() { # version row haproxy-binary config agent expected-status [header ...]
    local v=$1 name=$2 bin=$3 cfg=$4 agent=$5 want=$6
    local -a hdrs=()
    for h in "${@:7}"; do hdrs+=(-H "$h"); done
    local fe be code=
    fe=$(port); be=$(port)
    STAGEDOOR_FRONTEND=127.0.0.1:$fe STAGEDOOR_BACKEND=127.0.0.1:$be \
    STAGEDOOR_AGENT=127.0.0.1:${agent_port[$agent]:-1} STAGEDOOR_SPOE_CONF=${SPOE_CONF:-$PWD/haproxy/stagedoor.spoe.conf} \
        "${hap_pin[@]}" "$bin" -db -f "$work/threads.cfg" -f "$cfg" -f examples/quickstart/echo-backend.cfg >/dev/null 2>&1 &
    local hap=$!
    for _ in $(seq 100); do
        code=$(curl -s -o /dev/null -w '%{http_code}' "${hdrs[@]}" "http://127.0.0.1:$fe/api/orders" || true)
        [ "$code" = "$want" ] && break
        sleep 0.1
    done
    [ "$code" = "$want" ] || { echo "$name: got $code, want $want" >&2; kill $hap; exit 1; }
    local -a script=()
    [ -z "${WRK_SCRIPT:-}" ] || script=(-s "$WRK_SCRIPT")
    local -a load=("${wrk_pin[@]}" wrk -t"$wrk_threads" -c"$conns" --latency "${script[@]}" "${hdrs[@]}" "http://127.0.0.1:$fe/api/orders")
    [ "$warmup" -gt 0 ] && timeout $((warmup + 15)) "${load[@]}" -d"${warmup}s" >/dev/null
    if [ -n "${barrier:-}" ]; then   # a pair: both measured runs start together
        touch "$barrier.$name"
        while [ ! -e "$barrier" ]; do sleep 0.02; done
    fi
    local out before=0 after=0 pid=${agent_pid[$agent]:-}
    local perf=
    if [ -n "$perf_dir" ] && [ -n "$pid" ]; then
        perf record -q --call-graph "${PERF_CALLGRAPH:-dwarf,16384}" -p "$pid" -o "$perf_dir/$v.$name.$(ls "$perf_dir" | grep -c "^$v\.$name\.").data" \
            -- sleep "$secs" 2>/dev/null &
        perf=$!
    fi
    [ -n "$pid" ] && before=$(cpu_ticks "$pid")
    local hap_before hap_after
    hap_before=$(cpu_ticks "$hap")
    out=$(timeout $((secs + 15)) "${load[@]}" -d"${secs}s")
    [ -n "$pid" ] && after=$(cpu_ticks "$pid")
    hap_after=$(cpu_ticks "$hap")
    # The agent's sockets at the end of the run: HAProxy 2.6 keeps the SPOE connections
    # it opened (about one per concurrent request in a burst).
    local socks=-
    [ -n "$pid" ] && socks=$(find "/proc/$pid/fd" -lname 'socket:*' 2>/dev/null | wc -l)
    [ -z "$perf" ] || wait "$perf" || true
    kill $hap; wait $hap 2>/dev/null || true
    local rps p50 p99 non2xx total agent_us=-
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p50=$(awk '$1=="50%" {print $2}' <<<"$out")
    p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
    total=$(awk '/requests in/ {print $1}' <<<"$out")
    [ -n "$pid" ] && agent_us=$(awk -v t="$((after - before))" -v hz="$hz" -v n="$total" 'BEGIN {printf "%.2f", t / hz * 1e6 / n}')
    # HAProxy's share of a CPU over the run: near 1.00 when it, pinned, is the limit.
    local hap_busy
    hap_busy=$(awk -v t="$((hap_after - hap_before))" -v hz="$hz" -v s="$secs" 'BEGIN {printf "%.2f", t / hz / s}')
    printf '%-5s %-8s %10s req/s  p50 %-8s p99 %-8s non-2xx %-7s agent CPU %s us/req  HAProxy busy %s  agent sockets %s\n' \
        "$v" "$name" "$rps" "$p50" "$p99" "${non2xx:-0}" "$agent_us" "$hap_busy" "$socks"
    echo "$rps $(to_us "$p50") $(to_us "$p99") ${non2xx:-0} $agent_us" >>"$work/res.$v.$name${res_tag:-}"
}

# Rows a and b at the same time ("a+b" in ROWS): two HAProxy processes on the same CPU,
# two wrk on theirs, measured over the same seconds, so both see the same machine: on
# shared machines whose speed changes from one run to the next, their ratio is steadier
# than that of two runs in turn. Each HAProxy has half the CPU the row alone has; the
# results go in rows "a@a+b" and "b@a+b". The two rows must use different agents (not
# warm+paths, say): each agent's CPU is divided by its own row's requests.
pairs=0
pair() { # version a b haproxy-binary
    local v=$1 a=$2 b=$3 bin=$4 ra rb
    if [[ $b == *+* ]] || { [ "$(agent_of "$a")" = "$(agent_of "$b")" ] && [ "$(agent_of "$a")" != none ]; } || [ "$a" = "$b" ]; then
        echo "pair $a+$b: two different rows with different agents, one + only" >&2
        exit 1
    fi
    pairs=$((pairs + 1))
    barrier=$work/go.$pairs
    res_tag=@$a+$b row "$v" "$a" "$bin" & ra=$!
    res_tag=@$a+$b row "$v" "$b" "$bin" & rb=$!
    while [ ! -e "$barrier.$a" ] || [ ! -e "$barrier.$b" ]; do
        # One side failed: let the other go on and end.
        kill -0 "$ra" 2>/dev/null && kill -0 "$rb" 2>/dev/null || break
        sleep 0.02
    done
    touch "$barrier"
    wait "$ra" && wait "$rb" || { echo "pair $a+$b failed" >&2; exit 1; }
    rm -f "$barrier" "$barrier".*
    barrier=
}

# The agent a row talks to ("none" for HAProxy alone).
agent_of() {
    case $1 in
    warm | paths | session | deny) echo warm ;;
    paths0) echo warm0 ;;
    baseline | native) echo none ;;
    *) echo "$1" ;;
    esac
}

row() { # version row haproxy-binary
    local v=$1 r=$2 bin=$3 bearer="Authorization: Bearer $token" agent
    agent=$(agent_of "$r")
    case $r in
    *+*) pair "$v" "${r%%+*}" "${r#*+}" "$bin" ;;
    baseline) run "$v" "$r" "$bin" "$work/baseline.cfg" "$agent" 200 ;;
    native) run "$v" "$r" "$bin" "$work/native.cfg" "$agent" 200 "$bearer" ;;
    paths | paths0) WRK_SCRIPT=$work/paths.lua run "$v" "$r" "$bin" "$hap_cfg" "$agent" 200 "$bearer" ;;
    noop | noopvars | warm | fresh | warm0 | fresh0 | quiet) run "$v" "$r" "$bin" "$hap_cfg" "$agent" 200 "$bearer" ;;
    session) run "$v" "$r" "$bin" "$hap_cfg" "$agent" 200 "Cookie: theme=dark; $session" \
        "Accept: text/html,application/xhtml+xml,*/*;q=0.8" ;;
    deny) run "$v" "$r" "$bin" "$hap_cfg" "$agent" 401 ;;
    *) echo "unknown row $r" >&2; exit 1 ;;
    esac
}

# The median of column $2 of file $1 ("-" stays "-").
median() { sort -g <(awk -v c="$2" '{print $c}' "$1") | awk '
    { a[NR] = $1 } END { if (a[1] == "-") { print "-"; exit }
      print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }

# Round by round, row a's column c over row b's (each res file has a line a round, in
# order: req/s p50 p99 non-2xx cpu), and the median of those ratios: the rows of one
# round ran next to each other, so this is less moved by drift between rounds.
per_round() { # version a b column label
    [ -f "$work/res.$1.$2" ] && [ -f "$work/res.$1.$3" ] || return 0
    paste "$work/res.$1.$2" "$work/res.$1.$3" | awk -v c="$4" -v label="$5" '
        $c + 0 > 0 && $(c + 5) + 0 > 0 { r[++n] = $c / $(c + 5); list = list sprintf(" %.2f", r[n]) }
        END { if (!n) exit
              for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (r[j] < r[i]) { t = r[i]; r[i] = r[j]; r[j] = t }
              printf "%s, per round:%s; median %.2f\n", label, list,
                  (n % 2 ? r[(n + 1) / 2] : (r[n / 2] + r[n / 2 + 1]) / 2) }'
}

# The median table of one version, in issue 14's layout (ratios to native jwt_verify).
table() { # version
    local v=$1 r native
    native=$(median "$work/res.$v.native" 1 2>/dev/null || echo 0)
    echo "| row | req/s | ratio | p50 ms | p99 ms | non-2xx | agent CPU us/req |"
    echo "|---|---|---|---|---|---|---|"
    for r in $(sed -E 's/([^ +]+)\+([^ ]+)/\1@\1+\2 \2@\1+\2/g' <<<"$rows"); do
        local f=$work/res.$v.$r
        awk -v r="$r" -v rps="$(median "$f" 1)" -v nat="$native" -v p50="$(median "$f" 2)" \
            -v p99="$(median "$f" 3)" -v bad="$(median "$f" 4)" -v cpu="$(median "$f" 5)" 'BEGIN {
            printf "| %s | %.0f | %s | %.2f | %.2f | %s | %s |\n", r, rps,
                (nat > 0 ? sprintf("%.2f", rps / nat) : ""), p50 / 1000, p99 / 1000, bad, cpu }'
    done
    awk -v n="$(median "$work/res.$v.noop" 1 2>/dev/null)" -v w="$(median "$work/res.$v.warm" 1 2>/dev/null)" \
        -v f="$(median "$work/res.$v.fresh" 1 2>/dev/null)" -v nat="$native" \
        -v cn="$(median "$work/res.$v.noop" 5 2>/dev/null)" -v cw="$(median "$work/res.$v.warm" 5 2>/dev/null)" 'BEGIN {
        if (n > 0 && w > 0) printf "warm / do-nothing req/s: %.2f (goal >= 0.95)\n", w / n
        if (cn > 0 && cw > 0) printf "agent CPU warm / do-nothing: %.2f (goal <= 1.5)\n", cw / cn
        if (nat > 0 && f > 0) printf "fresh / native jwt_verify req/s: %.2f (goal >= 1.25 on 2.6)\n", f / nat }'
    per_round "$v" warm noop 1 "warm / do-nothing req/s"
    per_round "$v" warm noop 5 "agent CPU warm / do-nothing"
    per_round "$v" paths paths0 5 "agent CPU, 1,000 paths: this build / BEFORE_BIN's"
    per_round "$v" paths warm 5 "agent CPU, 1,000 paths / one path"
    per_round "$v" quiet noop 1 "warm, decision log off / do-nothing req/s"
    per_round "$v" quiet noop 5 "agent CPU warm, decision log off / do-nothing"
    if [ -s "$work/res.$v.noopvars" ]; then
        per_round "$v" warm noopvars 1 "warm / do-nothing with stagedoor's variables req/s"
        per_round "$v" warm noopvars 5 "agent CPU warm / do-nothing with stagedoor's variables"
        per_round "$v" noopvars noop 1 "do-nothing with / without stagedoor's variables req/s"
    fi
    per_round "$v" fresh native 1 "fresh / native req/s"
    local p
    for p in $rows; do
        [[ $p == *+* ]] || continue
        per_round "$v" "${p#*+}@$p" "${p%%+*}@$p" 1 "at the same time, ${p#*+} / ${p%%+*} req/s"
        per_round "$v" "${p#*+}@$p" "${p%%+*}@$p" 5 "at the same time, agent CPU ${p#*+} / ${p%%+*}"
    done
    per_round "$v" warm0 noop 1 "before (warm0) / do-nothing req/s"
    per_round "$v" warm0 noop 5 "before (warm0): agent CPU / do-nothing"
    per_round "$v" fresh0 native 1 "before (fresh0) / native req/s"
    [ -f "$work/res.$v.warm0" ] || [ -f "$work/res.$v.fresh0" ] || return 0
    awk -v n="$(median "$work/res.$v.noop" 1 2>/dev/null)" -v w="$(median "$work/res.$v.warm0" 1 2>/dev/null)" \
        -v f="$(median "$work/res.$v.fresh0" 1 2>/dev/null)" -v nat="$native" \
        -v cn="$(median "$work/res.$v.noop" 5 2>/dev/null)" -v cw="$(median "$work/res.$v.warm0" 5 2>/dev/null)" 'BEGIN {
        if (n > 0 && w > 0) printf "before (warm0) / do-nothing req/s: %.2f\n", w / n
        if (cn > 0 && cw > 0) printf "before (warm0): agent CPU / do-nothing: %.2f\n", cw / cn
        if (nat > 0 && f > 0) printf "before (fresh0) / native jwt_verify req/s: %.2f\n", f / nat }'
}

echo "== $(nproc) CPUs, $(uptime | sed 's/.*load/load/'); HAProxy on CPU ${hap_cpu:-any}, wrk on CPU ${wrk_cpu:-any} (-t$wrk_threads -c$conns), agents on CPU ${agent_cpu:-any}; ${warmup}+${secs} s a run, $rounds rounds"
versions=${VERSIONS:-2.6 3.0 3}
for v in $versions; do
    case $v in
    2.6) bin=$(command -v haproxy) ;;
    3.0) bin=tests/peers/haproxy30/haproxy ;;
    *) bin=tests/peers/haproxy3/haproxy ;;
    esac
    echo "== $("$bin" -v | sed -n 1p)"
    fwd=$rows
    back=$(tr ' ' '\n' <<<"$rows" | grep . | tac | tr '\n' ' ')
    for i in $(seq "$rounds"); do
        if [ $((i % 2)) = 1 ]; then order=$fwd; else order=$back; fi
        for r in $order; do row "$v" "$r" "$bin"; done
    done
done
for v in $versions; do
    echo "== medians of $rounds rounds, HAProxy $v"
    table "$v"
done
echo "== $(uptime | sed 's/.*load/load/')"
for a in warm fresh ${before_bin:+warm0 fresh0}; do
    echo "== stagedoor $a"
    curl -s "http://127.0.0.1:${admin_port[$a]}/metrics" | grep -E "^stagedoor_(decisions_total|spop_protocol_errors_total|token_cache_(hits|misses)_total)" | grep -v " 0$" || true
done
