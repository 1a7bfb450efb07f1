#!/usr/bin/env bash
# The cloud-api-adaptor and peerpods-ctrl images (Dockerfile), built with buildah on a base
# made from Debian packages: tests/image runs them. Cached by input hash in
# /var/cache/peerpods-test/image: unchanged inputs on this machine cost nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash image/build
