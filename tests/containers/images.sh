# Sourced by tests/containers.sh: the stand-in base images, the engine's API socket
# and the stagedoor image built from the repository's Dockerfile.

debian_sources() {
    local suite=$1
    echo "deb http://deb.debian.org/debian $suite main"
    if [ "$suite" = bookworm ]; then
        echo "deb http://deb.debian.org/debian bookworm-updates main"
        echo "deb http://deb.debian.org/debian-security bookworm-security main"
    fi
}

# mmdebstrap SUITE OUT.tar PACKAGES [HOOK...]: a minbase Debian rootfs as a tarball,
# without docs, man pages and locales. Check-Valid-Until off: the mirror this machine
# reaches serves a fixed snapshot whose unstable Release file has expired (still signed
# and checked).
debootstrap_tar() {
    local suite=$1 out=$2 pkgs=$3
    shift 3
    local hooks=()
    for h in "$@"; do hooks+=(--customize-hook="$h"); done
    debian_sources "$suite" >"$out.list"
    mmdebstrap --quiet --variant=minbase --include="$pkgs" \
        --aptopt='Acquire::Languages "none"' --aptopt='Acquire::Check-Valid-Until "false"' \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt=force-unsafe-io \
        "${hooks[@]}" "$suite" "${out%.tar}.part.tar" "$out.list"
    mv "${out%.tar}.part.tar" "$out"
    rm -f "$out.list"
}

# The distroless stand-in: the few packages distroless/cc is made of, unpacked
# (dpkg-deb -x, no maintainer scripts, so no shell or dpkg is ever needed or
# present), the CA bundle made as update-ca-certificates makes it, and distroless's
# users. Debian 12's packages, from this machine's apt sources.
runtime_tar() {
    local out=$1 work=$dir/work/runtime
    rm -rf "$work" && mkdir -p "$work/debs" "$work/root"
    (cd "$work/debs" && apt-get -qq -o APT::Sandbox::User=root download libc6 libgcc-s1 libssl3 ca-certificates netbase tzdata base-files)
    for deb in "$work"/debs/*.deb; do dpkg-deb -x "$deb" "$work/root"; done
    local r=$work/root
    mkdir -p "$r/etc/ssl/certs" "$r/tmp" "$r/root" "$r/home/nonroot"
    cat "$r"/usr/share/ca-certificates/mozilla/*.crt >"$r/etc/ssl/certs/ca-certificates.crt"
    printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
        'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
        'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >"$r/etc/passwd"
    printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'nonroot:x:65532:' >"$r/etc/group"
    chmod 1777 "$r/tmp"
    chmod 700 "$r/root"
    chown 65532:65532 "$r/home/nonroot"
    # What distroless leaves out too: docs, the maintainer scripts' helpers.
    rm -rf "$r/usr/share/doc" "$r/usr/share/man" "$r/usr/share/lintian" "$r/usr/sbin" \
        "$r/usr/bin" "$r/sbin" "$r/bin" "$r/etc/update-motd.d" "$r/etc/profile" "$r/etc/skel"
    tar --numeric-owner -C "$r" -cf "$out.part" .
    mv "$out.part" "$out"
    rm -rf "$work"
}

# The official haproxy image's conventions (docker-library/haproxy): binary at
# /usr/local/sbin/haproxy, config at /usr/local/etc/haproxy/haproxy.cfg, an entrypoint
# that turns `haproxy ...` into `haproxy -W -db ...`, user haproxy, SIGUSR1 to stop.
HAPROXY_HOOK='chroot "$1" sh -ec "
mkdir -p /usr/local/etc/haproxy /usr/local/sbin /usr/local/bin
ln -sf /usr/sbin/haproxy /usr/local/sbin/haproxy
rm -f /etc/haproxy/haproxy.cfg
chown haproxy:haproxy /var/lib/haproxy
printf \"%s\n\" \"#!/bin/sh\" \"set -e\" \"if [ \\\"\\\${1#-}\\\" != \\\"\\\$1\\\" ]; then set -- haproxy \\\"\\\$@\\\"; fi\" \"if [ \\\"\\\$1\\\" = haproxy ]; then shift; set -- haproxy -W -db \\\"\\\$@\\\"; fi\" \"exec \\\"\\\$@\\\"\" >/usr/local/bin/docker-entrypoint.sh
chmod 755 /usr/local/bin/docker-entrypoint.sh
"'

# This machine's own CAs (its egress proxy re-signs TLS) in a build context, for the
# stand-ins that download (cargo from crates.io, npm from the npm registry); the
# official images on a machine with plain egress need none. Empty where there are none.
local_cas() { # CONTEXT
    mkdir -p "$1/ca"
    [ ! -d /usr/local/share/ca-certificates ] || cp -a /usr/local/share/ca-certificates/. "$1/ca/"
}

image_import() { # TAR NAME CHANGE...
    local tar=$1 name=$2
    shift 2
    local changes=()
    local ch
    for ch in "$@"; do changes+=(--change "$ch"); done
    podman image exists "$name" || podman import -q "${changes[@]}" "$tar" "$name" >/dev/null
}

base_images() {
    phase "stand-in base images (Debian packages)"
    local c=$dir/cache
    # The two Debian installs side by side (mostly downloads and dpkg), each logged.
    local jobs=() j
    [ -f "$c/runtime.tar" ] || runtime_tar "$c/runtime.tar"
    if [ ! -f "$c/buildpack.tar" ]; then
        debootstrap_tar bookworm "$c/buildpack.tar" build-essential,python3,ca-certificates,curl,procps \
            >"$dir/buildpack.log" 2>&1 &
        jobs+=($!)
    fi
    if [ ! -f "$c/haproxy.tar" ]; then
        debootstrap_tar sid "$c/haproxy.tar" haproxy,ca-certificates "$HAPROXY_HOOK" >"$dir/haproxy.log" 2>&1 &
        jobs+=($!)
    fi
    for j in "${jobs[@]}"; do
        wait "$j" || { tail -n 20 "$dir"/buildpack.log "$dir"/haproxy.log; fail "mmdebstrap failed"; }
    done
    local path=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    image_import "$c/runtime.tar" gcr.io/distroless/cc-debian12:nonroot \
        "ENV=$path" ENV=SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
        USER=65532 WORKDIR=/home/nonroot
    image_import "$c/haproxy.tar" docker.io/library/haproxy:3.2 "ENV=$path" \
        USER=haproxy WORKDIR=/var/lib/haproxy STOPSIGNAL=SIGUSR1 \
        'ENTRYPOINT=["docker-entrypoint.sh"]' 'CMD=["haproxy","-f","/usr/local/etc/haproxy/haproxy.cfg"]'
    image_import "$c/buildpack.tar" localhost/stagedoor-standin/buildpack:bookworm "ENV=$path" 'CMD=["bash"]'

    # node:20-bookworm: this machine's Node 20 (the tests' peers run on it) where the
    # official image has it.
    if ! podman image exists docker.io/library/node:20-bookworm; then
        local ctx=$dir/work/node
        rm -rf "$ctx" && mkdir -p "$ctx"
        cp -a "$(readlink -f "$(command -v node)")" "$ctx/node"
        cp -a /usr/lib/node_modules/npm "$ctx/npm"
        cp -a /usr/include/node "$ctx/include"
        local_cas "$ctx"
        cat >"$ctx/Containerfile" <<'NODE'
FROM localhost/stagedoor-standin/buildpack:bookworm
COPY node /usr/local/bin/node
COPY npm /usr/local/lib/node_modules/npm
COPY include /usr/local/include/node
COPY ca /usr/local/share/ca-certificates/
ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
RUN update-ca-certificates >/dev/null \
 && ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
 && node --version && npm --version
CMD ["node"]
NODE
        podman build -q -t docker.io/library/node:20-bookworm "$ctx" >/dev/null
        rm -rf "$ctx"
    fi

    # rust:1.95-bookworm: the toolchain the tests use (rustc --print sysroot), without
    # its docs, where the official image keeps it (CARGO_HOME /usr/local/cargo).
    if ! podman image exists docker.io/library/rust:1.95-bookworm; then
        local ctx=$dir/work/rust sysroot
        sysroot=$(rustc --print sysroot)
        rm -rf "$ctx" && mkdir -p "$ctx/rust"
        cp -a "$sysroot/bin" "$sysroot/lib" "$ctx/rust/"
        [ ! -d "$sysroot/libexec" ] || cp -a "$sysroot/libexec" "$ctx/rust/"
        local_cas "$ctx"
        cat >"$ctx/Containerfile" <<'RUST'
FROM localhost/stagedoor-standin/buildpack:bookworm
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
COPY rust /usr/local/rust
COPY ca /usr/local/share/ca-certificates/
RUN update-ca-certificates >/dev/null \
 && mkdir -p /usr/local/cargo/bin && ln -s /usr/local/rust/bin/* /usr/local/cargo/bin/ \
 && cargo --version && rustc --version
RUST
        podman build -q -t docker.io/library/rust:1.95-bookworm "$ctx" >/dev/null
        rm -rf "$ctx"
    fi
    podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}'
}

# Podman's Docker-compatible API for Compose v2, stopped by its PID in cleanup.
service_start() {
    phase "podman system service (Docker API on a unix socket)"
    podman system service --time=0 "unix://$dir/podman.sock" >"$dir/service.log" 2>&1 &
    service_pid=$!
    for _ in $(seq 100); do
        [ -S "$dir/podman.sock" ] && curl -sf --unix-socket "$dir/podman.sock" http://d/_ping >/dev/null && break
        sleep 0.1
    done
    curl -sf --unix-socket "$dir/podman.sock" http://d/version | jq -c '{Version, ApiVersion}'
}

image_checks() { # IMAGE
    local img=$1 size files
    size=$(podman image inspect -f '{{.Size}}' "$img")
    echo "containers: image $img is $((size / 1000000)) MB ($size bytes)"
    [ "$size" -lt 40000000 ] || fail "image is $size bytes, not under 40 MB"
    local user
    user=$(podman image inspect -f '{{.Config.User}}' "$img")
    # Numeric and not 0: a kubelet checks runAsNonRoot (examples/kubernetes) only
    # against a numeric image user and refuses to start the container otherwise.
    [[ "${user%%:*}" =~ ^[0-9]+$ ]] && [ "${user%%:*}" != 0 ] || fail "image user is '$user', not a numeric non-root uid"
    # No shell and no package manager anywhere in the file system.
    local ctr
    ctr=$(podman create "$img")
    files=$(podman export "$ctr" | tar -t)
    podman rm -f "$ctr" >/dev/null
    local bad
    bad=$(grep -E '(^|/)(sh|bash|dash|ash|zsh|busybox|apt|apt-get|dpkg|rpm|microdnf|apk)$' <<<"$files" || true)
    [ -z "$bad" ] || fail "image holds a shell or package manager: $bad"
    if podman run --rm --entrypoint /bin/sh "$img" -c true >/dev/null 2>&1; then
        fail "/bin/sh runs in the image"
    fi
    echo "containers: image user $user, $(wc -l <<<"$files") paths, no shell, no package manager"
}

stagedoor_image() {
    phase "stagedoor image from the repository's Dockerfile"
    local args=()
    [ -z "${CARGO_BUILD_JOBS:-}" ] || args+=(--build-arg "CARGO_BUILD_JOBS=$CARGO_BUILD_JOBS")
    # Tagged as Compose names the image it would build for the service (project
    # stagedoor-demo), and as the Kubernetes example names it.
    if ! podman build "${args[@]}" -t stagedoor-demo-stagedoor -t ghcr.io/example/stagedoor:0.1.0 \
        -f Dockerfile . >"$dir/build.log" 2>&1; then
        tail -n 30 "$dir/build.log"
        fail "podman build of the Dockerfile failed"
    fi
    grep -E '^(STEP|COMMIT)|Finished' "$dir/build.log" || true
    image_checks localhost/stagedoor-demo-stagedoor
}
