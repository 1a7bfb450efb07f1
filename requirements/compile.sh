#!/usr/bin/env bash
# Regenerate the hash-pinned lock files in requirements/ from pyproject.toml:
#
#   bash requirements/compile.sh            # same versions, refreshed hashes and new deps
#   bash requirements/compile.sh --upgrade  # newest versions within pyproject.toml's ranges
#
# Needs uv (pip install uv, in any virtual environment). The locks are universal for
# CPython 3.11 and later (markers, and the hashes of every wheel and sdist of each pinned
# release, Linux x86-64 and arm64 included), so one file serves every machine:
#   bootstrap.txt  pip and setuptools, installed first (setuptools builds the editable
#                  install of this project without build isolation, under the same hashes)
#   runtime.txt    the runtime dependencies (scripts/install.sh)
#   test.txt       runtime + the test extras, aws and libvirt included (.ci/run)
#   image.txt      runtime + the aws, azure, gcp, libvirt, kube and guest extras (Dockerfile)
#   podvm.txt      runtime + the guest and tpm extras (the pod VM image, podvm-image/build)
# runtime.txt, image.txt and podvm.txt are constrained to test.txt, so a package they share has the same
# version everywhere. Install one with
#   pip install --require-hashes -r requirements/<lock>.txt
#   pip install --no-deps --no-build-isolation -e .
set -euo pipefail
cd "$(dirname "$0")/.."
uv=${UV:-uv}
common=(--universal --python-version 3.11 --generate-hashes --quiet
        --custom-compile-command "bash requirements/compile.sh")

"$uv" pip compile "${common[@]}" "$@" requirements/bootstrap.in -o requirements/bootstrap.txt
"$uv" pip compile "${common[@]}" "$@" pyproject.toml --extra test -o requirements/test.txt
"$uv" pip compile "${common[@]}" pyproject.toml -c requirements/test.txt \
    -o requirements/runtime.txt
# image.txt: the providers' SDKs, the Kubernetes client and the guest extra, so that every console script works in
# the images (tpm is the pod VM's alone: podvm-image/build builds it against libtss2-dev)
"$uv" pip compile "${common[@]}" "$@" pyproject.toml -c requirements/test.txt \
    --extra aws --extra azure --extra gcp --extra libvirt --extra kube --extra guest -o requirements/image.txt
"$uv" pip compile "${common[@]}" pyproject.toml -c requirements/test.txt \
    --extra guest --extra tpm -o requirements/podvm.txt
