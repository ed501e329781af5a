#!/usr/bin/env bash
# Containers for real (issue 15): builds the image from the repository's Dockerfile,
# brings docker-compose.yml up with Compose v2 and walks the README's compose
# walkthrough, then runs the Kubernetes sidecar shape; removes what it made.
#
# Engine: podman from Debian 12 (4.3), as root, runc and cgroupfs (crun refuses this
# machine's hybrid cgroups), its own containers.conf, storage and networks in a temp
# dir, and its Docker-compatible API on a unix socket for Compose v2 (Debian
# unstable's, tests/peers/compose). No public image registry is reachable, so the
# base images are stand-ins made here from Debian packages and tagged with the names
# the Dockerfile and the compose file use:
#   gcr.io/distroless/cc-debian12:nonroot  unpacked .debs (libc6, libgcc-s1, libssl3,
#                                          ca-certificates, netbase, tzdata, base-files):
#                                          no shell, no package manager, user nonroot
#                                          (65532), as distroless is built
#   rust:1.95-bookworm                     Debian 12 + build-essential + this machine's
#                                          Rust toolchain (the one the tests use)
#   haproxy:3.2                            Debian unstable's haproxy (3.2), laid out as
#                                          the official image (/usr/local/etc/haproxy,
#                                          its entrypoint, user haproxy, SIGUSR1)
#   node:20-bookworm                       Debian 12 + build-essential + python3 + this
#                                          machine's Node 20 under /usr/local, headers
#                                          included (Backstage's npm ci compiles
#                                          better-sqlite3 with --nodedir=/usr/local)
# Cache: with STAGEDOOR_CONTAINERS_DIR set, that directory (base tarballs, podman
# storage) is kept between runs; otherwise a fresh temp dir is used and removed.
# CARGO_BUILD_JOBS, if set, caps the image's cargo build.
# Usage: tests/containers.sh   (as root; tests/run.sh runs it under CI=true)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

started=$SECONDS
phase_start=$SECONDS
phase_name=""
timings=()
phase() {
    if [ -n "$phase_name" ]; then
        timings+=("$(printf '%4ds  %s' $((SECONDS - phase_start)) "$phase_name")")
    fi
    phase_name=$1
    phase_start=$SECONDS
    [ -z "$1" ] || echo "== containers: $1"
}
# Never a token in the output: a bearer token is printed as <token>.
fail() { echo "containers: FAIL: $*" | sed -E 's/Bearer [A-Za-z0-9._-]+/Bearer <token>/g' >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "needs root (podman rootful; rootless needs subuids this machine lacks)"

phase "install podman, runc, mmdebstrap (Debian) and Compose v2"
need=()
for p in podman runc mmdebstrap uidmap python3-yaml; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
podman --version
tests/peers/compose/fetch.sh >/dev/null
compose_bin=$repo/tests/peers/compose/docker-compose

# --- the engine's own state, all under $dir -------------------------------------
if [ -n "${STAGEDOOR_CONTAINERS_DIR:-}" ]; then
    dir=$STAGEDOOR_CONTAINERS_DIR
    keep=1
else
    dir=$(mktemp -d /var/tmp/stagedoor-containers.XXXXXX)
    keep=0
fi
mkdir -p "$dir"/{cache,tmp,networks,run,storage,work}
dir=$(cd "$dir" && pwd)
cat >"$dir/containers.conf" <<CONF
[containers]
# At or below the shell's hard limits (nofile 20000 here): podman sets these in every
# container, and setrlimit above the hard limit fails.
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=4096:4096"]
log_driver = "k8s-file"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$dir/tmp"
[network]
network_backend = "netavark"
network_config_dir = "$dir/networks"
CONF
cat >"$dir/storage.conf" <<CONF
[storage]
driver = "overlay"
graphroot = "$dir/storage"
runroot = "$dir/run"
CONF
cat >"$dir/registries.conf" <<CONF
unqualified-search-registries = ["docker.io"]
short-name-mode = "permissive"
CONF
export CONTAINERS_CONF=$dir/containers.conf
export CONTAINERS_STORAGE_CONF=$dir/storage.conf
export CONTAINERS_REGISTRIES_CONF=$dir/registries.conf
export DOCKER_HOST=unix://$dir/podman.sock
compose() { "$compose_bin" --project-directory "$repo" -f "$repo/docker-compose.yml" "$@"; }

service_pid=""
cleanup() {
    local rc=$?
    set +e
    phase "bring down and remove"
    if [ -S "$dir/podman.sock" ]; then
        compose down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1
    fi
    podman pod rm -af -t 2 >/dev/null 2>&1
    podman secret rm stagedoor-backstage >/dev/null 2>&1
    podman rm -af -t 2 >/dev/null 2>&1
    podman volume prune -f >/dev/null 2>&1
    podman network rm -f stagedoor-demo_default >/dev/null 2>&1
    [ -z "$service_pid" ] || kill "$service_pid" 2>/dev/null
    [ -z "$service_pid" ] || wait "$service_pid" 2>/dev/null
    if [ "$keep" = 1 ]; then
        echo "containers: kept $dir (images and base tarballs cached)"
    else
        podman system reset -f >/dev/null 2>&1
        rm -rf "$dir"
    fi
    phase ""
    echo "== containers: timings"
    printf '%s\n' "${timings[@]}"
    printf '%4ds  total\n' $((SECONDS - started))
    [ "$rc" = 0 ] && echo "containers: ok" || echo "containers: FAILED (exit $rc)"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=tests/containers/images.sh
. tests/containers/images.sh
# shellcheck source=tests/containers/walk.sh
. tests/containers/walk.sh

base_images
service_start
peers_start
stagedoor_image
compose_walk
sidecar_walk
