#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs what the tests need
# (HAProxy 2.6 from Debian 12, HAProxy 3.0 from Debian 13, HAProxy 3.x and Compose v2
# from Debian unstable, unpacked beside the tests, the Node test peers from their committed lockfiles), then
# runs formatting, lints and every test. The tests that need those peers carry #[ignore = "needs …"]
# (a plain `cargo test` lists them as ignored); here they run (--include-ignored), a
# missing peer fails them, and the closing line must count 0 ignored.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v haproxy >/dev/null 2>&1; then
    echo "== installing haproxy (Debian)"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq haproxy >/dev/null
fi
haproxy -v | sed -n 1p   # sed reads everything: no SIGPIPE under pipefail
# The browser tests (tests/browser_*.rs): Debian's Chromium and the chromedriver built
# with it (same version). ~40 s with apt-get update on a fresh Debian 12.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    echo "== installing chromium and chromium-driver (Debian)"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq chromium chromium-driver >/dev/null
fi
chromedriver --version | sed -n 1p
echo "== HAProxy 3.x (Debian unstable's) and 3.0 LTS (Debian 13's), unpacked, not installed"
tests/peers/haproxy3/fetch.sh
tests/peers/haproxy30/fetch.sh
echo "== Compose v2 (Debian unstable's, unpacked, not installed)"
tests/peers/compose/fetch.sh

# npm ci starts from nothing each time (Backstage's takes ~4 min on 2 busy cores, mostly
# compiling better-sqlite3): skipped while node_modules is the one it installed from the
# same lockfile for the same Node. Delete node_modules to force a reinstall.
for lock in tests/peers/*/package-lock.json; do
    [ -e "$lock" ] || continue
    peer=$(dirname "$lock")
    stamp="$peer/node_modules/.installed-from"
    want="$(sha256sum <"$lock") node $(node --version)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        echo "== $peer: node_modules already installed from this lockfile"
        continue
    fi
    echo "== npm ci in $peer"
    npm ci --prefix "$peer" --no-audit --no-fund --loglevel=error
    echo "$want" >"$stamp"
done

# One build, then many runs: the incremental cache (~2 GB) would only cost disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
echo "== disk: $(df -h . | awk 'NR == 2 { print $4 " free on " $6 }')"

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "== cargo test"
# One after the other, the test binaries took ~2 min on 2 idle cores, much of it
# waiting. Now three lanes:
# - sleeping: binaries that mostly sleep on timeouts (well under a second of CPU),
#   beside everything else from start to end;
# - waiting beside light: binaries that wait on HAProxy, the agent and oidc-provider
#   starting, beside the light computing ones (any binary not named here);
# - then one after the other, beside the sleeping lane only: the heavy ones (CPU, load
#   loops through HAProxy (e2e_restart), or Backstage loading for ~10 s), whose
#   deadlines and timing bounds expect the cores to themselves (with more beside
#   them, some failed).
# Every binary runs (--no-fail-fast), so the closing line counts the whole suite.
sleeping=(admin_limits)
waiting=(deploy e2e_agent e2e_browser e2e_desync e2e_large_token e2e_spoe_retry e2e_haproxy_spop sso_flow token_oidc browser_smoke browser_sso)
alone=(policy_attacks token_keysets token_attacks token_props catalog_backstage token_backstage_e2e e2e_ops e2e_restart e2e_flapping e2e_flood)
cargo test --locked --no-run
echo "== disk after the test build: target $(du -sh target 2>/dev/null | cut -f1), $(df -h . | awk 'NR == 2 { print $4 }') free"
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
flags() { for t in "$@"; do [ ! -e "tests/$t.rs" ] || echo "--test=$t"; done; }
light=(--lib --bins)
for f in tests/*.rs; do
    t=$(basename "$f" .rs)
    [[ " ${sleeping[*]} ${waiting[*]} ${alone[*]} " == *" $t "* ]] || light+=("--test=$t")
done
# No target named would mean every target: such a lane has nothing to run.
lane() { [ $# = 0 ] || cargo test --locked --no-fail-fast "$@" -- --include-ignored; }
rc=0
lane $(flags "${sleeping[@]}") >"$logs/9-sleeping.log" 2>&1 &
sleeping_lane=$!
lane $(flags "${waiting[@]}") >"$logs/1-waiting.log" 2>&1 &
waiting_lane=$!
lane "${light[@]}" 2>&1 | tee "$logs/0-light.log" || rc=1
wait "$waiting_lane" || rc=1
cat "$logs/1-waiting.log"
for t in "${alone[@]}"; do
    lane $(flags "$t") 2>&1 | tee "$logs/2-$t.log" || rc=1
done
wait "$sleeping_lane" || rc=1
cat "$logs/9-sleeping.log"
cargo test --locked --doc 2>&1 | tee "$logs/3-doc.log" || rc=1
# One closing line for the whole suite (cargo prints one per test binary).
cat "$logs"/*.log | awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) g += $i } }
     END { printf "suite: %d passed, %d failed, %d ignored\n", p, f, g; if (g > 0) { print "suite: no test may be left out here"; exit 1 } }' || rc=1
# Containers (issue 15): the image built from the Dockerfile, docker-compose.yml up under
# podman with Compose v2 and walked through, the Kubernetes sidecar under podman kube
# play. Last, after the cargo lanes, so its image build does not race theirs (~5 min,
# tests/containers.sh prints each phase's time). Needs root; under CI=true it always
# runs, elsewhere STAGEDOOR_CONTAINERS=1 asks for it.
if [ "${CI:-}" = true ] || [ "${STAGEDOOR_CONTAINERS:-}" = 1 ]; then
    # .ci/run sets STAGEDOOR_FREE_DISK=1: on a CI machine the cargo build (~2.3 GB) is
    # not needed past this point, and the container test needs ~5 GB of its own (base
    # images, the image build). A run from the README keeps target/ for the next run.
    if [ "${STAGEDOOR_FREE_DISK:-}" = 1 ]; then
        rm -rf target/debug
        echo "== disk before tests/containers.sh (target/debug removed): $(df -h . | awk 'NR == 2 { print $4 }') free"
    fi
    echo "== tests/containers.sh"
    tests/containers.sh || { echo "suite: tests/containers.sh failed"; rc=1; }
else
    echo "== tests/containers.sh not run (CI is not true; STAGEDOOR_CONTAINERS=1 runs it)"
fi
exit "$rc"
