# Images of this project, Debian 12 with Python 3.11, two targets:
#   cloud-api-adaptor  the DaemonSet's image (the default, last target): the adaptor, the
#                      entrypoint upstream's Helm chart runs (/usr/local/bin/entrypoint.sh),
#                      every cloud provider's SDK, iptables (on the node's backend) and
#                      iproute2, libvirt0, and ssh for qemu+ssh:// libvirt URIs
#   peerpods-ctrl      the same install for the PeerPod cleanup controller (peerpod-ctrl, the
#                      default command) and the admission webhook (peerpods-webhook)
#
#   docker build -t cloud-api-adaptor .          docker build --target peerpods-ctrl .
#   buildah bud --isolation chroot --layers [--target peerpods-ctrl] .
#   bash image/build       both targets with buildah, on a base made from Debian packages
#
# Base image: pin it by digest for a reproducible build. Resolve the tag's digest with
#   docker buildx imagetools inspect python:3.11-slim-bookworm    (the "Digest:" line)
# or `crane digest python:3.11-slim-bookworm`, then build with
#   docker build --build-arg BASE=python:3.11-slim-bookworm@sha256:<digest> .
# The default below is the tag alone: it could not be resolved where this file was written.
# Any Debian 12 image with python3 (>= 3.11) and its venv module will do: the default has
# Python in /usr/local, the base image/build makes has Debian's python3 and python3-venv.
#
# The project and its locked dependencies go into a venv, /opt/peerpods, on either base:
# Debian's python3 is externally managed (PEP 668, its dist-packages belong to apt), and a
# venv needs no --break-system-packages, holds exactly the locked packages, and is copied
# whole out of the build stage, leaving the compiler behind. Every console script is
# linked into /usr/local/bin (/usr/local/bin/cloud-api-adaptor, as upstream's image).
ARG BASE=python:3.11-slim-bookworm

# The venv with the locked dependencies: the big layer, rebuilt only when a lock changes.
FROM ${BASE} AS deps
# libvirt-python is an sdist: it is compiled against libvirt-dev, with Python's headers
# (in the python images already; python3-dev for Debian's python3).
RUN set -eu; \
    packages="gcc pkg-config libvirt-dev"; \
    python3 -c 'import os, sys, sysconfig; \
        sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("include"), "Python.h")))' \
        || packages="$packages python3-dev"; \
    apt-get update; \
    apt-get install -y --no-install-recommends $packages; \
    rm -rf /var/lib/apt/lists/*
# Exact versions and hashes from requirements/: pip and setuptools first, then the
# dependencies (libvirt-python built by the locked setuptools, without build isolation).
# The optional secret ca-bundle is the CA bundle pip checks the index's certificate with,
# where the index is reached through a TLS-inspecting proxy (`--secret
# id=ca-bundle,src=/etc/ssl/certs/ca-certificates.crt`; image/build passes it). A secret
# mount, because then the file is in no layer.
COPY requirements/bootstrap.txt requirements/image.txt /src/requirements/
RUN --mount=type=secret,id=ca-bundle \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
 && python3 -m venv /opt/peerpods \
 && /opt/peerpods/bin/pip install --no-cache-dir --require-hashes \
        -r /src/requirements/bootstrap.txt \
 && /opt/peerpods/bin/pip install --no-cache-dir --require-hashes --no-build-isolation \
        -r /src/requirements/image.txt

# The project's wheel.
FROM deps AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY protocols protocols
COPY runtime runtime
COPY podnetwork podnetwork
COPY adaptor adaptor
COPY forwarder forwarder
COPY providers providers
COPY guest guest
COPY webhook webhook
COPY k8s k8s
# COMMIT: what `cloud-api-adaptor version` prints as the commit (a git revision)
ARG COMMIT=unknown
RUN set -eu; \
    case "$COMMIT" in *[!0-9A-Za-z._-]*|"") echo "bad COMMIT: $COMMIT" >&2; exit 1 ;; esac; \
    sed -i "s/^COMMIT = \"unknown\"/COMMIT = \"$COMMIT\"/" adaptor/cli.py; \
    /opt/peerpods/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation -w /wheels .

FROM ${BASE} AS runtime
# Installed only where the base lacks them (a base made by image/build has them already).
RUN set -eu; \
    missing=""; \
    for package in ca-certificates iptables iproute2 libvirt0 openssh-client; do \
        dpkg-query -W -f '${db:Status-Status}' "$package" 2>/dev/null | grep -qx installed \
            || missing="$missing $package"; \
    done; \
    if [ -n "$missing" ]; then \
        apt-get update; \
        apt-get install -y --no-install-recommends $missing; \
        rm -rf /var/lib/apt/lists/*; \
    fi
COPY --from=deps /opt/peerpods /opt/peerpods
# The project on top, in small layers of its own. (COPY, not a bind mount: a layer cache
# tells a copied file's new content, but not a mounted one's.)
COPY --from=wheel /wheels /tmp/wheels
RUN /opt/peerpods/bin/pip install --no-cache-dir --no-index --no-deps /tmp/wheels/*.whl \
 && rm -rf /tmp/wheels \
 && for script in $(/opt/peerpods/bin/python -c 'from importlib.metadata import distribution; \
        print(" ".join(e.name for e in distribution("peerpods").entry_points \
                       if e.group == "console_scripts"))'); do \
        ln -sf "/opt/peerpods/bin/$script" "/usr/local/bin/$script"; \
    done
# Runs as root, on purpose: the adaptor creates network namespaces, VXLAN devices and
# iptables rules (NET_ADMIN, SYS_ADMIN for setns), writes root-owned /run/peerpod and
# /run/netns on the host, and serves the hypervisor socket mode 0600 to the root-run Kata
# shim. Kubernetes gives added capabilities to a non-root process only through file
# capabilities (there are no ambient ones), so a non-root USER would lose them. The
# DaemonSet adds only NET_ADMIN and SYS_ADMIN to the default set.

FROM runtime AS peerpods-ctrl
CMD ["peerpod-ctrl"]

FROM runtime AS cloud-api-adaptor
COPY image/entrypoint.sh /usr/local/bin/entrypoint.sh
# iptables uses the node's backend, nft or legacy: image/iptables-wrapper, as the
# alternative for iptables and ip6tables until its first call chooses the real one.
COPY image/iptables-wrapper /usr/sbin/iptables-wrapper
RUN for command in iptables ip6tables; do \
        update-alternatives --install "/usr/sbin/$command" "$command" \
            /usr/sbin/iptables-wrapper 100 \
            --slave "/usr/sbin/$command-restore" "$command-restore" /usr/sbin/iptables-wrapper \
            --slave "/usr/sbin/$command-save" "$command-save" /usr/sbin/iptables-wrapper; \
    done
ENTRYPOINT ["cloud-api-adaptor"]
