#!/usr/bin/env bash
# libvirt provider tests: let libvirtd run QEMU as root, and build the small pod VM image
# the real-daemon tests boot. The daemons themselves are started by the tests, inside a
# network namespace of their own (tests/providers/libvirt/libvirtd.py). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/../.."

conf=/etc/libvirt/qemu.conf
# Debian ships qemu.conf with libvirt-daemon-system, which is not installed (it would start a
# libvirtd and its default network on the machine's own network); the built-in defaults apply
# to everything not set here. With QEMU as libvirt-qemu and /dev/kvm root-only, every libvirt
# call stalls (~40 s), so QEMU runs as root.
mkdir -p /etc/libvirt
touch "$conf"
sed -i -E '/^[[:space:]]*(user|group)[[:space:]]*=/d' "$conf"
printf 'user = "root"\ngroup = "root"\n' >>"$conf"

# libvirt's built-in defaults name these accounts (QEMU's default user, dnsmasq's user);
# libvirtd refuses to start when they do not exist. libvirt-daemon-system would create them.
for account in libvirt-qemu libvirt-dnsmasq; do
    if ! getent passwd "$account" >/dev/null; then
        adduser --quiet --system --group --no-create-home --home /var/lib/libvirt \
            "$account" 2>/dev/null || useradd --system --user-group --no-create-home "$account"
    fi
done

bash tests/providers/libvirt/build-test-image.sh
