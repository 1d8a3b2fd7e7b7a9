# The gpu-provider image: the daemon (`gpu-provider run`) and the node agent (`gpu-provider agent`).
#
# Multi-stage: the Python dependencies are installed from the hash-pinned lock (requirements.lock, made by
# pip-compile from pyproject.toml) into a virtual environment, then only that environment is copied into
# the runtime stage, which runs as a non-root user. No NVML library is baked in: on GPU nodes NVIDIA's
# container runtime injects libnvidia-ml (NVIDIA_DRIVER_CAPABILITIES=utility), as for NVIDIA's own
# DaemonSets.
#
# BASE is any Debian-like image with python3 (>= 3.11) and its venv module. Default: the official slim
# image. Without a registry, hack/image/build.sh assembles one from Debian packages and passes it here.
ARG BASE=docker.io/library/python:3.11-slim-bookworm

FROM ${BASE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY requirements.lock ./
# ca-bundle (optional): the CA bundle a TLS-intercepting proxy needs; a build secret, never in a layer
RUN --mount=type=secret,id=ca-bundle,required=false \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi; \
    python3 -m venv /opt/gpu-provider \
 && /opt/gpu-provider/bin/pip install --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY sdl ./sdl
COPY provider ./provider
RUN /opt/gpu-provider/bin/pip install --no-deps --no-build-isolation . \
 && /opt/gpu-provider/bin/pip uninstall --yes setuptools wheel \
 && /opt/gpu-provider/bin/python -m compileall -q /opt/gpu-provider/lib

FROM ${BASE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="gpu-provider" \
      org.opencontainers.image.description="Provider daemon that sells Kubernetes GPU capacity on a decentralized marketplace" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/gpu-provider/gpu-provider"
COPY --from=build /opt/gpu-provider /opt/gpu-provider
ENV PATH=/opt/gpu-provider/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
# a fixed numeric non-root user (the chart's securityContext runs as it too; no /etc/passwd entry needed)
USER 65532:65532
ENTRYPOINT ["gpu-provider"]
CMD ["run"]
