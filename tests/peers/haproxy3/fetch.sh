#!/usr/bin/env bash
# HAProxy 3.x for the 3.1+ SPOE interop tests (the SPOE was rewritten in 3.1; Debian 12
# ships 2.6). Debian unstable's current haproxy and its libraries are unpacked into
# ./root by ../sid-unpack.sh (signed packages, nothing installed), and ./haproxy runs
# the binary with unstable's own loader and libraries: Debian 12's libc is too old.
# Idempotent: does nothing when ./root already holds a working 3.x binary.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$here/root
libs=$root/usr/lib/x86_64-linux-gnu

run() { "$libs/ld-linux-x86-64.so.2" --library-path "$libs" "$root/usr/sbin/haproxy" "$@"; }

if [ -x "$root/usr/sbin/haproxy" ] && run -v >/dev/null 2>&1; then
    run -v | sed -n 1p
    exit 0
fi

# haproxy and the libraries it links (directly or through them). A new dependency in
# unstable shows up below as a "not found" library, naming what to add here.
packages=(
    haproxy libc6 libcrypt1 libjemalloc2 liblua5.4-0 libopentracing-c-wrapper0t64
    libopentracing1 libstdc++6 libgcc-s1 libpcre2-8-0 libssl3t64 libzstd1 zlib1g
)
"$here/../sid-unpack.sh" "$here" "${packages[@]}"

missing=$("$libs/ld-linux-x86-64.so.2" --library-path "$libs" --list "$root/usr/sbin/haproxy" | grep "not found" || true)
if [ -n "$missing" ]; then
    echo "haproxy 3.x: libraries missing from $root:" >&2
    echo "$missing" >&2
    exit 1
fi
run -v | sed -n 1p
