# syntax=docker/dockerfile:1
# oomhero's image. Two targets:
#   docker build -t localhost/oomhero:0.1.0 .                     sidecar (default): distroless
#   docker build --target ebpf -t localhost/oomhero-ebpf:0.1.0 .  adds libbpf1, for the eBPF probe
# (make image builds both offline and writes archives for podman, Docker, containerd and kind;
# a multi-arch build: docker buildx build --platform linux/amd64,linux/arm64 ..., deploy/README.md).
# Both run as UID 65532 and start `oomhero` (sidecar mode); no HEALTHCHECK: Kubernetes probes
# the metrics port's /healthz instead (deploy/). Both carry the prebuilt CO-RE probe
# (oomhero/sources/ebpf/memcg_threshold.bpf.o, compiled by the wheel build); only the eBPF one
# has the libbpf to load it.
#
# Every stage is Debian 12 (bookworm): the venv in /opt/oomhero is made from Debian's
# /usr/bin/python3 (3.11) in the build stage and links back to it, so the final stage must carry
# the same Debian python3. deploy/build-venv.sh is the whole install; CI runs it too.
#
# The bases, pinned by the digest of their multi-arch index (amd64, arm64). deploy/build-image,
# which reaches no registry, passes Debian bases it made with mmdebstrap instead.
ARG DEBIAN=docker.io/library/debian:bookworm-slim@sha256:3783cc01769c7b2b1b83a5c5ad96c815348e28ed7da68e2e3687004faa906251
ARG DISTROLESS=gcr.io/distroless/python3-debian12:nonroot@sha256:17b27c84c985a53d0cd2adef4f196ca327fa9b6755369be605cf45533b4e700b

FROM ${DEBIAN} AS build-base
# python3-venv brings ensurepip. clang and libbpf-dev (bpf/*.h) compile the CO-RE probe in the
# wheel's build hook (setup.py, bpf/build.py); no other compiler: every dependency ships a
# manylinux wheel. Build stage only: no final image carries them.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv clang libbpf-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py MANIFEST.in README.md ./
COPY bpf ./bpf
COPY oomhero ./oomhero
COPY deploy/build-venv.sh ./deploy/

FROM build-base AS build
# A CA bundle for pip behind a TLS-inspecting proxy, e.g. mounted with `buildah bud -v` (as
# deploy/build-image does); unset, pip uses the image's own. Build stages only: no final image
# keeps it.
ARG PIP_CERT
RUN --mount=type=cache,target=/root/.cache/pip deploy/build-venv.sh --require-probe /opt/oomhero

# eBPF target: Debian slim with libbpf1, which loads the CO-RE probe (no compiler, no bcc, no
# LLVM: the object was compiled in the build stage). It needs the node's kernel BTF
# (/sys/kernel/btf/vmlinux, visible in a container) and root with CAP_BPF+CAP_PERFMON, set in the
# pod, not here (deploy/pod-ebpf.yaml).
FROM ${DEBIAN} AS ebpf
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 libbpf1 \
    && rm -rf /var/lib/apt/lists/*
# What the image is (OCI annotations; the build passes the commit, and the repository's URL),
# after the apt layer: a new commit does not rebuild it.
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=
LABEL org.opencontainers.image.title="oomhero (eBPF)" \
      org.opencontainers.image.description="Signals a container's processes as its memory cgroup nears the limit; with libbpf1 for the CO-RE probe" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.revision="$REVISION" \
      org.opencontainers.image.source="$SOURCE" \
      org.opencontainers.image.licenses="MIT"
COPY --from=build /opt/oomhero /opt/oomhero
ENV PATH=/opt/oomhero/bin:$PATH PYTHONUNBUFFERED=1
USER 65532:65532
ENTRYPOINT ["/opt/oomhero/bin/oomhero"]

# Default target, last so a plain `docker build` gives it. Distroless python3-debian12 is
# bookworm's python3 and its libraries, no shell or package manager: nothing to exec into but
# oomhero, and a small attack surface. Its /usr/bin/python3 is what the venv links to.
FROM ${DISTROLESS} AS sidecar
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=
LABEL org.opencontainers.image.title="oomhero" \
      org.opencontainers.image.description="Signals a container's processes as its memory cgroup nears the limit, before the OOM killer does" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.revision="$REVISION" \
      org.opencontainers.image.source="$SOURCE" \
      org.opencontainers.image.licenses="MIT"
COPY --from=build /opt/oomhero /opt/oomhero
# Unbuffered: log lines reach `kubectl logs` as they happen.
ENV PATH=/opt/oomhero/bin:$PATH PYTHONUNBUFFERED=1
# Numeric: the kubelet can only verify runAsNonRoot against a numeric USER (distroless's
# "nonroot" is 65532). Run app and sidecar under one UID and oomhero needs no capability.
USER 65532:65532
ENTRYPOINT ["/opt/oomhero/bin/oomhero"]
