# stagedoor: multi-stage build, small non-root runtime image.
#   docker build -t stagedoor .
#   docker run --rm -p 12345:12345 -p 9901:9901 -v $PWD/examples/quickstart:/etc/stagedoor:ro \
#     stagedoor serve --config /etc/stagedoor/stagedoor.toml
# (the quickstart config listens on 127.0.0.1: in a container, set [agent] and
# [admin] listen to 0.0.0.0 as examples/compose/stagedoor.toml does)
#
# The two bases can be swapped (a mirror, a pinned digest, a local stand-in):
#   docker build --build-arg BUILDER_IMAGE=... --build-arg RUNTIME_IMAGE=... .
# tests/containers.sh builds this file unchanged with local stand-ins tagged with
# these default names. The builder must have cargo on PATH; the runtime needs glibc,
# libgcc_s, CA certificates and a `nonroot` user.
ARG BUILDER_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${BUILDER_IMAGE} AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# src/policy/mod.rs takes its module docs from docs/policy.md (include_str!).
COPY docs ./docs
COPY benches ./benches
COPY examples ./examples
# Without debug info and symbols: the binary is ~13 MB instead of ~85 MB (the release
# profile keeps line tables for profiling on the host). CARGO_BUILD_JOBS, when passed
# as a build argument, caps the build's parallelism.
ARG CARGO_BUILD_JOBS
ENV CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols
RUN cargo build --release --locked --bin stagedoor
# The catalog snapshot's directory, empty, for the runtime image (which has no shell
# to make it).
RUN mkdir -p /state

# distroless/cc: glibc and CA certificates, no shell; runs as uid 65532.
FROM ${RUNTIME_IMAGE}
COPY --from=build /src/target/release/stagedoor /usr/local/bin/stagedoor
# Owned by the runtime user: a named volume mounted here (docker-compose.yml) starts
# as a copy of it, so the snapshot can be written under Docker as under podman.
COPY --from=build --chown=65532:65532 /state /var/lib/stagedoor
# Numeric (distroless's nonroot): a kubelet refuses to start a container with
# `runAsNonRoot: true` (examples/kubernetes) whose image user is a name it cannot
# check ("image has non-numeric user (nonroot), cannot verify user is non-root").
USER 65532:65532
EXPOSE 12345 9901
# Liveness from the binary itself (the image has no shell or curl).
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD ["/usr/local/bin/stagedoor", "probe", "--url", "http://127.0.0.1:9901/healthz"]
ENTRYPOINT ["/usr/local/bin/stagedoor"]
CMD ["serve", "--config", "/etc/stagedoor/stagedoor.toml"]
