#!/usr/bin/env bash
# How long SPOP decisions wait while the agent syncs a large Backstage catalog
# (BENCHMARKS.md, "Issue 14: one worker beside HAProxy", "Why one worker is not the
# default"). A stand-in Backstage (backstage.py: ENTITIES components, each with a
# FILL-byte annotation, or with MANY=1 FILL annotations; CHURN=1 changes every etag on
# each listing, so every poll applies a change) is polled every second by the agent,
# while probe.py sends one NOTIFY at a time on one SPOP connection for SECONDS and
# prints the longest waits for an ACK. The stand-in is hand-made on purpose: the real
# Backstage cannot serve a 38 MB catalog that changes every second.
# ROUTES=n gives each entity n route lines (a large policy); NOROUTES_AFTER=s drops every
# route s seconds after the start (the wipe-out guard then holds polls back); KEEP_LOG=path
# keeps the agent's log. file.sh is the same probe for a file catalog under SIGHUP.
# Usage: [MANY=1] [ROUTES=n] [NOROUTES_AFTER=s] [KEEP_LOG=path] [STAGEDOOR_BIN=path]
#        benches/catalog-stall/run.sh THREADS ENTITIES FILL CHURN SECONDS
#   e.g. benches/catalog-stall/run.sh 1 10000 200 0 10
#        MANY=1 benches/catalog-stall/run.sh 1 200 8000 1 12
set -euo pipefail
threads=$1 entities=$2 fill=$3 churn=$4 secs=$5
. "$(dirname "$0")/common.sh"
bs=$spare
python3 "$here/backstage.py" "$bs" "$entities" "$fill" "$churn" 2>"$work/backstage.log" &
bs_pid=$!
agent_pid=
trap 'kill $agent_pid $bs_pid 2>/dev/null; wait $agent_pid $bs_pid 2>/dev/null; rm -rf "$work"' EXIT
start_agent "$threads" "source = \"backstage\"
url = \"http://127.0.0.1:$bs\"
poll_seconds = 1"
python3 "$here/probe.py" "$spop" "$secs"
[ -n "${KEEP_LOG:-}" ] && cp "$work/agent.log" "$KEEP_LOG"
echo "by-refs requests: $(grep -c by-refs "$work/backstage.log" || true), syncs applied: $(grep -c 'catalog synced' "$work/agent.log" || true)"
