# stagedoor: multi-stage build, small non-root runtime image.
#   docker build -t stagedoor .
#   docker run --rm -p 12345:12345 -p 9901:9901 -v $PWD/examples/quickstart:/etc/stagedoor:ro \
#     stagedoor serve --config /etc/stagedoor/stagedoor.toml
# (the quickstart config listens on 127.0.0.1: in a container, set [agent] and
# [admin] listen to 0.0.0.0 as examples/compose/stagedoor.toml does)
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY examples ./examples
RUN cargo build --release --locked --bin stagedoor

# distroless/cc: glibc and CA certificates, no shell; runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/stagedoor /usr/local/bin/stagedoor
USER nonroot:nonroot
EXPOSE 12345 9901
# Liveness from the binary itself (the image has no shell or curl).
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD ["/usr/local/bin/stagedoor", "probe", "--url", "http://127.0.0.1:9901/healthz"]
ENTRYPOINT ["/usr/local/bin/stagedoor"]
CMD ["serve", "--config", "/etc/stagedoor/stagedoor.toml"]
