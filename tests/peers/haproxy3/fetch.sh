#!/usr/bin/env bash
# HAProxy 3.x, newest: Debian unstable's, for the 3.1+ SPOE interop tests (the SPOE was
# rewritten in 3.1). Unpacked here, not installed: see ../haproxy-fetch.sh.
here=$(cd "$(dirname "$0")" && pwd)
exec "$here/../haproxy-fetch.sh" "$here" sid
