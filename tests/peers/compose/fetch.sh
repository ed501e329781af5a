#!/usr/bin/env bash
# Docker Compose v2 for tests/deploy.rs: `docker compose config` validates
# docker-compose.yml (schema, interpolation, mounts) without a container engine.
# Debian 12 has only the old Python docker-compose 1.x; unstable's docker-compose is
# Compose v2 (the Go CLI plugin), needing only libc >= 2.34, which Debian 12 has. It is
# unpacked into ./root by ../debian-unpack.sh (signed package, nothing installed) and
# ./docker-compose runs it. Idempotent.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if "$here/docker-compose" version >/dev/null 2>&1; then
    "$here/docker-compose" version
    exit 0
fi
"$here/../debian-unpack.sh" sid "$here" docker-compose
"$here/docker-compose" version
