#!/usr/bin/env bash
# HAProxy 3.0 LTS, the last version with the original SPOE engine, as Debian 13
# (trixie) ships it. Unpacked here, not installed: see ../haproxy-fetch.sh.
here=$(cd "$(dirname "$0")" && pwd)
exec "$here/../haproxy-fetch.sh" "$here" trixie
