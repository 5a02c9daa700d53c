# syntax=docker/dockerfile:1
# oomhero's image. Two targets:
#   docker build -t oomhero:0.1.0 .                     sidecar (default): distroless, no shell
#   docker build --target ebpf -t oomhero:0.1.0-ebpf .  adds Debian's bcc for --sources ebpf
# Both run as UID 65532 and start `oomhero` (sidecar mode); no HEALTHCHECK: Kubernetes probes
# the metrics port's /healthz instead (deploy/).
#
# Every stage is Debian 12 (bookworm): the venv in /opt/oomhero is made from Debian's
# /usr/bin/python3 (3.11) in the build stage and links back to it, so the final stage must carry
# the same Debian python3. deploy/build-venv.sh is the whole install; CI runs it too.

FROM debian:bookworm-slim AS build-base
# python3-venv brings ensurepip; no compiler: every dependency ships a manylinux wheel.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY oomhero ./oomhero
COPY deploy/build-venv.sh ./deploy/

FROM build-base AS build
# A CA bundle for pip behind a TLS-inspecting proxy, e.g. mounted with `buildah bud -v` (as
# deploy/build-image does); unset, pip uses the image's own. Build stages only: no final image
# keeps it.
ARG PIP_CERT
RUN --mount=type=cache,target=/root/.cache/pip deploy/build-venv.sh /opt/oomhero

# bcc's Python bindings are Debian's python3-bpfcc, outside the venv: the venv must see the
# system site-packages.
FROM build-base AS build-ebpf
ARG PIP_CERT
RUN --mount=type=cache,target=/root/.cache/pip \
    deploy/build-venv.sh --system-site-packages /opt/oomhero

# eBPF target: Debian slim (bcc needs Debian's python3 and pulls in LLVM; it is large). The probe
# compiles at start against the node's kernel headers (mount /lib/modules and /usr/src) and
# needs root with CAP_BPF+CAP_PERFMON or CAP_SYS_ADMIN, set in the pod, not here.
FROM debian:bookworm-slim AS ebpf
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-bpfcc \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build-ebpf /opt/oomhero /opt/oomhero
ENV PATH=/opt/oomhero/bin:$PATH PYTHONUNBUFFERED=1
USER 65532:65532
ENTRYPOINT ["/opt/oomhero/bin/oomhero"]

# Default target, last so a plain `docker build` gives it. Distroless python3-debian12 is
# bookworm's python3 and its libraries, no shell or package manager: nothing to exec into but
# oomhero, and a small attack surface. Its /usr/bin/python3 is what the venv links to.
FROM gcr.io/distroless/python3-debian12:nonroot AS sidecar
COPY --from=build /opt/oomhero /opt/oomhero
# Unbuffered: log lines reach `kubectl logs` as they happen.
ENV PATH=/opt/oomhero/bin:$PATH PYTHONUNBUFFERED=1
# Numeric: the kubelet can only verify runAsNonRoot against a numeric USER (distroless's
# "nonroot" is 65532). Run app and sidecar under one UID and oomhero needs no capability.
USER 65532:65532
ENTRYPOINT ["/opt/oomhero/bin/oomhero"]
