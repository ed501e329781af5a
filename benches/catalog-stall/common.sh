# Shared by run.sh and file.sh (sourced): the binary, a temp dir, free ports, the
# agent's config around a [catalog] section, and starting the agent until it is ready.
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${STAGEDOOR_BIN:-$root/target/release/stagedoor}
[ -x "$bin" ] || (cd "$root" && cargo build -q --release --bin stagedoor)
work=$(mktemp -d)
# Three ports the OS picked: the agent's SPOP and admin listeners, and a spare.
read -r spop admin spare < <(python3 -c "
import socket
ss=[socket.socket() for _ in range(3)]
[s.bind(('127.0.0.1',0)) for s in ss]; print(' '.join(str(s.getsockname()[1]) for s in ss)); [s.close() for s in ss]")

# start_agent THREADS CATALOG_TOML: writes the config and starts the agent (agent_pid).
start_agent() {
    cat > "$work/agent.toml" <<C
[agent]
listen = "127.0.0.1:$spop"
worker_threads = $1
[admin]
listen = "127.0.0.1:$admin"
[log]
decisions = "off"
[[issuers]]
issuer = "https://idp.quickstart.example"
audiences = ["quickstart-api"]
jwks_file = "$root/examples/quickstart/demo-jwks.json"
algorithms = ["ES256"]
[catalog]
$2
[policy]
unmatched = "deny"
C
    "$bin" serve --config "$work/agent.toml" 2>"$work/agent.log" >/dev/null &
    agent_pid=$!
    for _ in $(seq 150); do curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null && break; sleep 0.2; done
    curl -s "http://127.0.0.1:$admin/metrics" | grep -E '^stagedoor_catalog_entities ' || true
}
