# syntax=docker/dockerfile:1
# The millrace image for deploy/kubernetes:  docker build -t millrace:0.1.0 .
# Build stage: the official Rust image of Cargo.toml's rust-version (scripts/check-k8s.sh checks
# they agree), on the same Debian release as the runtime stage, so the binary's glibc matches.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && cp target/release/millrace /usr/local/bin/millrace

FROM debian:bookworm-slim
# A fixed non-root uid/gid (the manifests' runAsUser, runAsGroup and fsGroup); the folders the
# manifests mount belong to it, so a plain `docker run` can use them too.
RUN groupadd --system --gid 10001 millrace \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin millrace \
    && install -d -o 10001 -g 10001 /data /spill /var/lib/millrace
COPY --from=build /usr/local/bin/millrace /usr/local/bin/millrace
USER 10001:10001
WORKDIR /data
EXPOSE 7070 7071
ENTRYPOINT ["millrace"]
CMD ["--help"]
