# syntax=docker/dockerfile:1
#
# hookrelay container image.
#
#   docker build -t hookrelay:dev .
#   docker run --rm -v hookrelay-data:/var/lib/hookrelay \
#     -v "$PWD/config:/etc/hookrelay/tenants:ro" -p 9787:9787 hookrelay:dev
#
# Without Docker or a registry: sudo bash .ci/image (podman, a base made with
# debootstrap passed as PYTHON_IMAGE; builds this file and runs the image).
#
# The main listener (ingest + management API) binds loopback by default: in
# Kubernetes the application shares the pod's network namespace and reaches it
# at http://127.0.0.1:8787. A non-loopback HOOKRELAY_LISTEN needs
# HOOKRELAY_INGEST_TOKEN. The ops listener (9787) serves only /metrics,
# /healthz and /readyz.

# The base is an argument so that CI can build on a base made locally (.ci/image);
# by default it is the pinned official image.
# checkov:skip=CKV_DOCKER_7: the tag is in ARG PYTHON_IMAGE's default (python:3.12.7-slim-bookworm), which checkov does not resolve
ARG PYTHON_IMAGE=python:3.12.7-slim-bookworm

# ---------------------------------------------------------------- builder ---
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Only what the build needs; .dockerignore keeps the rest of the tree out.
COPY pyproject.toml README.md ./
COPY relay/ ./relay/
# A non-editable install: the final stage needs only /opt/venv, not /src.
RUN pip install --no-cache-dir "/src[redis]" \
    && hookrelay --version

# ------------------------------------------------------------------ final ---
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="hookrelay" \
      org.opencontainers.image.description="Webhook relay daemon: durable journal, signed delivery, retries, dead letters, Prometheus metrics" \
      org.opencontainers.image.licenses="Apache-2.0"

# Non-root user with a fixed uid/gid so Kubernetes runAsUser/fsGroup 10001 match.
RUN groupadd --system --gid 10001 hookrelay \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin hookrelay \
    && mkdir -p /var/lib/hookrelay /etc/hookrelay/tenants /var/run/hookrelay \
    && chown 10001:10001 /var/lib/hookrelay /var/run/hookrelay

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOOKRELAY_DATA_DIR=/var/lib/hookrelay \
    HOOKRELAY_CONFIG=/etc/hookrelay/tenants \
    HOOKRELAY_LISTEN=127.0.0.1:8787 \
    HOOKRELAY_OPS_LISTEN=0.0.0.0:9787 \
    HOOKRELAY_LOG_FORMAT=json

# The journal. Mount a volume here (emptyDir or a PVC in Kubernetes).
VOLUME /var/lib/hookrelay

# 8787: ingest/API (loopback unless HOOKRELAY_LISTEN says otherwise);
# 9787: ops (/metrics, /healthz, /readyz).
EXPOSE 8787 9787

USER 10001:10001
WORKDIR /var/lib/hookrelay

# No curl in the slim image: probe /healthz with the standard library.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9787/healthz', timeout=4).status == 200 else 1)"]

# SIGTERM drains in-flight attempts for --shutdown-grace seconds, flushes the
# journal and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["hookrelay", "run"]
