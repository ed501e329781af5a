#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs what the tests need
# (HAProxy 2.6 from Debian 12, HAProxy 3.0 from Debian 13, HAProxy 3.x and Compose v2
# from Debian unstable, unpacked beside the tests, the Node test peers from their committed lockfiles), then
# runs formatting, lints and every test. The tests that need those peers are #[ignore]d
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
echo "== HAProxy 3.x (Debian unstable's) and 3.0 LTS (Debian 13's), unpacked, not installed"
tests/peers/haproxy3/fetch.sh
tests/peers/haproxy30/fetch.sh
echo "== Compose v2 (Debian unstable's, unpacked, not installed)"
tests/peers/compose/fetch.sh

for lock in tests/peers/*/package-lock.json; do
    [ -e "$lock" ] || continue
    peer=$(dirname "$lock")
    echo "== npm ci in $peer"
    npm ci --prefix "$peer" --no-audit --no-fund --loglevel=error
done

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# --no-fail-fast: every test binary runs, so the closing line counts the whole suite.
rc=0
cargo test --locked --no-fail-fast -- --include-ignored 2>&1 | tee "$log" || rc=$?
# One closing line for the whole suite (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) g += $i } }
     END { printf "suite: %d passed, %d failed, %d ignored\n", p, f, g; if (g > 0) { print "suite: no test may be left out here"; exit 1 } }' "$log" || rc=1
exit "$rc"
