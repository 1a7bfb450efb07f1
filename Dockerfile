# cloud-api-adaptor image: Debian with iptables and iproute2 for the worker-side tunnel.
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables iproute2 libvirt0 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY protocols protocols
COPY adaptor adaptor
COPY forwarder forwarder
COPY providers providers
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc pkg-config libvirt-dev \
 && pip install --no-cache-dir '.[aws,azure,gcp,libvirt]' \
 && apt-get purge -y gcc pkg-config libvirt-dev && apt-get autoremove -y \
 && rm -rf /var/lib/apt/lists/* /src
WORKDIR /
ENTRYPOINT ["cloud-api-adaptor"]
