#!/usr/bin/env bash
# stagedoor replay on 100,000 logged decisions, on one core (issue 16's goal: < 5 s).
#   benches/replay.sh [LINES]     (default 100000; needs a release build)
# The log is examples/catalog-ci/sample-decisions.jsonl repeated (42 callers and
# requests, every kind of line the agent writes: verified callers with their
# identity, missing and expired tokens), replayed against the example's changed
# catalog (so some lines change and are listed). Prints the wall and CPU time of
# three runs, pinned to CPU 1.
set -euo pipefail
cd "$(dirname "$0")/.."
lines=${1:-100000}
cargo build --release --locked --bin stagedoor >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sample=examples/catalog-ci/sample-decisions.jsonl
n=$(wc -l <"$sample")
for _ in $(seq 1 $(( (lines + n - 1) / n ))); do cat "$sample"; done | head -n "$lines" >"$tmp/log.jsonl"
echo "log: $(wc -l <"$tmp/log.jsonl") lines, $(du -h "$tmp/log.jsonl" | cut -f1)"
for i in 1 2 3; do
    /usr/bin/time -f "run $i: %e s wall, %U s user, %S s sys, %M KiB max RSS" \
        taskset -c 1 target/release/stagedoor replay --against examples/catalog-ci/stagedoor.toml \
        --log "$tmp/log.jsonl" --format text >"$tmp/out.txt"
done
head -1 "$tmp/out.txt"
