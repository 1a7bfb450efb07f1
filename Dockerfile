# cloud-api-adaptor image: Debian with iptables and iproute2 for the worker-side tunnel.
#
# Base image: pin it by digest for a reproducible build. Resolve the tag's digest with
#   docker buildx imagetools inspect python:3.11-slim-bookworm    (the "Digest:" line)
# or `crane digest python:3.11-slim-bookworm`, then build with
#   docker build --build-arg BASE=python:3.11-slim-bookworm@sha256:<digest> .
# The default below is the tag alone: it could not be resolved where this file was written.
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables iproute2 libvirt0 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY requirements requirements
COPY protocols protocols
COPY runtime runtime
COPY podnetwork podnetwork
COPY adaptor adaptor
COPY forwarder forwarder
COPY providers providers
# Exact versions and hashes from requirements/: pip and setuptools first, then the
# dependencies (libvirt-python is an sdist, built here against libvirt-dev by the locked
# setuptools), then the project without resolving anything more.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc pkg-config libvirt-dev \
 && pip install --no-cache-dir --require-hashes -r requirements/bootstrap.txt \
 && pip install --no-cache-dir --require-hashes --no-build-isolation -r requirements/image.txt \
 && pip install --no-cache-dir --no-deps --no-build-isolation . \
 && apt-get purge -y gcc pkg-config libvirt-dev && apt-get autoremove -y \
 && rm -rf /var/lib/apt/lists/* /src
WORKDIR /
# Runs as root, on purpose: the adaptor creates network namespaces, VXLAN devices and
# iptables rules (NET_ADMIN, SYS_ADMIN for setns), writes root-owned /run/peerpod and
# /run/netns on the host, and serves the hypervisor socket mode 0600 to the root-run Kata
# shim. Kubernetes gives added capabilities to a non-root process only through file
# capabilities (there are no ambient ones), so a non-root USER would lose them. The
# DaemonSet adds only NET_ADMIN and SYS_ADMIN to the default set.
ENTRYPOINT ["cloud-api-adaptor"]
