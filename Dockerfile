# syntax=docker/dockerfile:1
# The cxpulse binary in a small runtime image (docker-compose.yml builds it as cxpulse:local).
#
#   docker build -t cxpulse .
#   docker run --rm cxpulse --help
#
# Stage 1 builds a release binary. rdkafka (crates/cxpulse-kafka) compiles its bundled
# librdkafka with features ssl (system OpenSSL) and zstd, plus the default libz: the full
# rust image has the C toolchain, make, perl, pkg-config and the OpenSSL/zlib headers; cmake is
# added for dependencies that build with it.
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p cxpulse --bin cxpulse \
 && install -D -m 0755 target/release/cxpulse /out/cxpulse \
 && strip /out/cxpulse

# Stage 2: Debian slim with the binary and what it links at run time (OpenSSL for TLS to
# Kafka, CA certificates), as an unprivileged user.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin cxpulse
COPY --from=build /out/cxpulse /usr/local/bin/cxpulse
USER cxpulse
# /metrics and /healthz (metrics.listen)
EXPOSE 9898
ENTRYPOINT ["/usr/local/bin/cxpulse"]
CMD ["run", "--config", "/etc/cxpulse/cxpulse.toml"]
