#!/usr/bin/env bash
# Install peerpods on this machine (Debian 12 or later), as root:
#
#   sudo bash scripts/install.sh
#
# 1. apt-get installs the runtime system packages that are missing: iproute2 and iptables
#    (network namespaces, VXLAN, tc, NOTRACK rules), python3-venv (the virtual environment)
#    and util-linux (nsenter; essential on Debian, listed for minimal images). Every
#    Python dependency ships binary wheels for Linux x86-64 and arm64, so no compiler is
#    needed.
# 2. creates the virtual environment <repo>/.venv if it is missing (python3 -m venv);
# 3. upgrades pip and setuptools in it, then installs the exact, hash-checked dependency
#    versions of requirements/runtime.txt (pip --require-hashes) and the project itself,
#    editable, without resolving anything more (--no-deps). No cloud SDK extras: the
#    embedded `local` provider needs none; requirements/image.txt and requirements/test.txt
#    lock the extras (pip install --require-hashes -r requirements/test.txt).
#
# Idempotent: running it again installs only what is missing.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${PEERPODS_VENV:-$repo/.venv}
packages=(iproute2 iptables python3 python3-venv util-linux ca-certificates)

if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root: sudo bash scripts/install.sh" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null || ! command -v dpkg-query >/dev/null; then
    echo "install.sh: this script needs a Debian-based system (apt-get)" >&2
    exit 1
fi

missing=()
for package in "${packages[@]}"; do
    if [ "$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null)" != installed ]; then
        missing+=("$package")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "== apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" \
        >/dev/null
fi

python=python3
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "install.sh: peerpods needs Python 3.11 or later; $python is $("$python" -V 2>&1)" >&2
    exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
    echo "== virtual environment $venv"
    "$python" -m venv "$venv"
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
pip=("$venv/bin/python" -m pip install -q)
echo "== pip install --require-hashes -r requirements/{bootstrap,runtime}.txt"
"${pip[@]}" --require-hashes -r "$repo/requirements/bootstrap.txt"
"${pip[@]}" --require-hashes -r "$repo/requirements/runtime.txt"
echo "== pip install --no-deps -e $repo"
# setuptools from bootstrap.txt builds it: no unpinned build environment is fetched
"${pip[@]}" --no-deps --no-build-isolation -e "$repo"

for tool in cloud-api-adaptor agent-protocol-forwarder process-user-data peerpodctl; do
    if [ ! -x "$venv/bin/$tool" ]; then
        echo "install.sh: $venv/bin/$tool is missing after the install" >&2
        exit 1
    fi
done
echo "installed: $venv/bin/{cloud-api-adaptor,agent-protocol-forwarder,process-user-data,peerpodctl}"
echo "next: sudo bash scripts/quickstart.sh"
