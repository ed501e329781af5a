#!/usr/bin/env bash
# Like run.sh, for the file source: FILES descriptor files of ENTITIES components each,
# each component with FILL annotations; the agent gets SIGHUP every second (a forced
# reload of an unchanged catalog, as a deploy tool or a `git pull` touching the files
# causes), while probe.py measures the longest waits for a decision.
# Usage: [STAGEDOOR_BIN=path] benches/catalog-stall/file.sh THREADS FILES ENTITIES FILL SECONDS
#   e.g. benches/catalog-stall/file.sh 1 5 40 8000 12
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
threads=$1 files=$2 entities=$3 fill=$4 secs=$5
bin=${STAGEDOOR_BIN:-$root/target/release/stagedoor}
[ -x "$bin" ] || (cd "$root" && cargo build -q --release --bin stagedoor)
work=$(mktemp -d)
read -r spop admin < <(python3 -c "
import socket
ss=[socket.socket() for _ in range(2)]
[s.bind(('127.0.0.1',0)) for s in ss]; print(' '.join(str(s.getsockname()[1]) for s in ss)); [s.close() for s in ss]")
mkdir "$work/catalog"
python3 - "$work/catalog" "$files" "$entities" "$fill" <<'P'
import sys, random
d, files, n, fill = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
keys = [f"a.io/k{random.randrange(10**9)}" for _ in range(fill)]
for f in range(files):
    with open(f"{d}/c{f}.yaml", "w") as out:
        for i in range(n):
            out.write(f"---\napiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: svc-{f}-{i}\n  annotations:\n")
            out.write(f"    stagedoor.io/routes: \"GET /s{f}-{i} public\"\n")
            out.writelines(f"    {k}: ''\n" for k in keys)
            out.write("spec:\n  owner: team-a\n")
P
cat > "$work/agent.toml" <<C
[agent]
listen = "127.0.0.1:$spop"
worker_threads = $threads
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
source = "file"
files = ["$work/catalog/*.yaml"]
reload_seconds = 1
[policy]
unmatched = "deny"
C
"$bin" serve --config "$work/agent.toml" 2>"$work/agent.log" >/dev/null &
agent_pid=$!
trap 'kill $agent_pid $hup_pid 2>/dev/null; wait $agent_pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 150); do curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null && break; sleep 0.2; done
curl -s "http://127.0.0.1:$admin/metrics" | grep -E '^stagedoor_catalog_entities ' || true
(while sleep 1; do kill -HUP $agent_pid; done) &
hup_pid=$!
python3 "$here/probe.py" "$spop" "$secs"
echo "loads: $(grep -c 'catalog files loaded' "$work/agent.log" || true)"
