# syntax=docker/dockerfile:1
#
# failoverd, failoverd-keeper and failoverctl in a small runtime image.
#
#   docker build -t failoverd:0.1.0 .
#
# The build stage needs no system protoc (build.rs uses the protoc of the protoc-bin-vendored
# crate). The Kubernetes manifests in deploy/kubernetes run this image as uid 10001 with a
# read-only root filesystem.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The registry and target caches live in BuildKit cache mounts, so a rebuild after a source
# change does not fetch and compile every dependency again. The binaries are copied out of the
# cache mount, which is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bins \
 && install -D -m 0755 -t /out target/release/failoverd target/release/failoverd-keeper target/release/failoverctl

FROM debian:bookworm-slim AS runtime
# ca-certificates: HTTPS to reference RPCs and Consul (TLS is rustls; failoverd links no OpenSSL).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 failoverd \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/failoverd --no-create-home \
        --shell /usr/sbin/nologin failoverd
# failoverd-keeper beside failoverd: the daemon starts its keepers from it (README, "The keeper").
COPY --from=build /out/failoverd /out/failoverd-keeper /out/failoverctl /usr/local/bin/
USER 10001
# `failoverd --config FILE` (or `failoverd run --config FILE`) runs one member; the Kubernetes
# DaemonSet passes `run --config /etc/failoverd/<node name>.toml` as arguments.
ENTRYPOINT ["/usr/local/bin/failoverd"]
