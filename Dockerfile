# syntax=docker/dockerfile:1.7
#
# One image definition for both services. Build one image per service:
#
#   docker build --build-arg SERVICE=api-service    --build-arg SERVICE_PORT=5000 -t medrobotics/api-service:TAG .
#   docker build --build-arg SERVICE=data-ingestion --build-arg SERVICE_PORT=8080 -t medrobotics/data-ingestion:TAG .
#
# Stages: chef (pinned toolchain + cargo-chef) -> planner (dependency recipe) -> builder
# (dependencies cooked in their own cached layer, then the workspace) -> runtime
# (distroless cc, non-root, no shell). Base images are pinned by tag here; CI resolves
# them to digests when it pushes (see docs/operations.md "Images").

# ---------------------------------------------------------------------------------------
FROM rust:1.95.0-slim-bookworm AS chef
# rust-toolchain.toml names 1.95.0 plus rustfmt/clippy; the image already carries 1.95.0,
# so pin it here and do not let rustup download the lint components during a build.
ENV RUSTUP_TOOLCHAIN=1.95.0 \
    CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0 \
    SQLX_OFFLINE=true
WORKDIR /app
RUN cargo install cargo-chef --locked --version 0.1.78

# ---------------------------------------------------------------------------------------
FROM chef AS planner
COPY . .
# The recipe lists only manifests and the lock file, so the cook step below is re-run
# only when dependencies change, not when source changes.
RUN cargo chef prepare --recipe-path recipe.json

# ---------------------------------------------------------------------------------------
FROM chef AS builder
ARG SERVICE=api-service
COPY --from=planner /app/recipe.json recipe.json
RUN cargo chef cook --release --locked --package "${SERVICE}" --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --package "${SERVICE}" \
    && install -D -m 0755 "target/release/${SERVICE}" /out/service

# ---------------------------------------------------------------------------------------
# distroless/cc: glibc, libgcc, CA certificates and tzdata; no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
ARG SERVICE=api-service
ARG SERVICE_PORT=5000
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="${SERVICE}" \
      org.opencontainers.image.description="medrobotics ${SERVICE} (surgical-robotics data platform)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.vendor="medrobotics" \
      org.opencontainers.image.licenses="Proprietary" \
      org.opencontainers.image.source="https://example.invalid/medrobotics" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"
COPY --from=builder --chown=0:0 /out/service /usr/local/bin/service
# Numeric uid/gid so Kubernetes' runAsNonRoot can verify it (distroless "nonroot").
USER 65532:65532
EXPOSE ${SERVICE_PORT}
ENV PORT=${SERVICE_PORT} \
    APP_LOG__FORMAT=json
# No HEALTHCHECK: there is no shell or HTTP client in the image, and Kubernetes probes
# (/health, /ready) do the job. checkov:skip=CKV_DOCKER_2:Kubernetes startup/liveness/readiness probes replace a Docker HEALTHCHECK; the distroless image has no client to run one
ENTRYPOINT ["/usr/local/bin/service"]
