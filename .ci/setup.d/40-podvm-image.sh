#!/usr/bin/env bash
# The pod VM image (podvm-image/), hardened variant with the development agent in place of
# kata-agent: tests/podvm_image inspects its tree and boots it under the test libvirtd.
# Cached by input hash: unchanged inputs on this machine cost nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash podvm-image/build --dev-agent -o /var/cache/peerpods-test/podvm-image
