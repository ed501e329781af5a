#!/usr/bin/env bash
# Usage: haproxy-fetch.sh DIR SUITE
# A newer HAProxy than Debian 12's 2.6 for the interop tests, fetched WITHOUT
# installing anything: the SUITE's haproxy and the libraries it links are unpacked
# into DIR/root by debian-unpack.sh (signed packages), and DIR/haproxy runs the binary
# with the suite's own loader and libraries, since Debian 12's libc is too old for it.
# Idempotent: does nothing when DIR/root already holds a working binary.
set -euo pipefail
dir=$1
suite=$2
root=$dir/root
libs=$root/usr/lib/x86_64-linux-gnu

run() { "$libs/ld-linux-x86-64.so.2" --library-path "$libs" "$root/usr/sbin/haproxy" "$@"; }

if [ -x "$root/usr/sbin/haproxy" ] && run -v >/dev/null 2>&1; then
    run -v | sed -n 1p
    exit 0
fi

# haproxy and the libraries it links (directly or through them). A new dependency
# shows up below as a "not found" library, naming what to add here.
packages=(
    haproxy libc6 libcrypt1 libjemalloc2 liblua5.4-0 libopentracing-c-wrapper0t64
    libopentracing1 libstdc++6 libgcc-s1 libpcre2-8-0 libssl3t64 libzstd1 zlib1g
)
"$(dirname "$0")/debian-unpack.sh" "$suite" "$dir" "${packages[@]}"

missing=$("$libs/ld-linux-x86-64.so.2" --library-path "$libs" --list "$root/usr/sbin/haproxy" | grep "not found" || true)
if [ -n "$missing" ]; then
    echo "haproxy ($suite): libraries missing from $root:" >&2
    echo "$missing" >&2
    exit 1
fi
run -v | sed -n 1p
