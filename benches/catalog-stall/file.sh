#!/usr/bin/env bash
# Like run.sh, for the file source: FILES descriptor files of ENTITIES components each,
# each component with FILL annotations; the agent gets SIGHUP every second (a forced
# reload of an unchanged catalog, as a deploy tool or a `git pull` touching the files
# causes), while probe.py measures the longest waits for a decision.
# Usage: [STAGEDOOR_BIN=path] benches/catalog-stall/file.sh THREADS FILES ENTITIES FILL SECONDS
#   e.g. benches/catalog-stall/file.sh 1 5 40 8000 12
set -euo pipefail
threads=$1 files=$2 entities=$3 fill=$4 secs=$5
. "$(dirname "$0")/common.sh"
agent_pid= hup_pid=
trap 'kill $agent_pid $hup_pid 2>/dev/null; wait $agent_pid 2>/dev/null; rm -rf "$work"' EXIT
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
start_agent "$threads" "source = \"file\"
files = [\"$work/catalog/*.yaml\"]
reload_seconds = 1"
(while sleep 1; do kill -HUP $agent_pid; done) &
hup_pid=$!
python3 "$here/probe.py" "$spop" "$secs"
echo "loads: $(grep -c 'catalog files loaded' "$work/agent.log" || true)"
