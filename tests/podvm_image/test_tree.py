"""The built pod VM image (podvm-image/build, run by .ci/setup.d/40-podvm-image.sh), read
from its root partition: nothing secret or per-VM baked in, the boot chain's units installed,
enabled and ordered as specified, the Python side in place, the manifest true to the image.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.podvm_image import units
from tests.podvm_image.image import RootFs, Unavailable, image_path, manifest_path

#: Trees where a key or credential could have been left by a package or the build.
SCANNED = ("/etc", "/root", "/opt", "/usr/local", "/var/lib", "/srv", "/home")
#: A PEM private key: the armour line, optional headers (encrypted PEM), then base64 lines.
#: The armour alone is code (cryptography's ssh.py parses it), not a key.
PRIVATE_KEY = re.compile(
    rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----[ \t]*\r?\n"
    rb"(?:[A-Za-z-]+:[^\n]*\r?\n)*\s*(?:[ \t]*[A-Za-z0-9+/=]{16,}[ \t]*\r?\n){2}"
)
NOT_A_PASSWORD = {"", "*", "!", "!*"}
COMPILERS = ("gcc", "cc", "c++", "g++", "clang", "tcc", "x86_64-linux-gnu-gcc-12", "rustc", "go")


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RootFs]:
    if not image_path().is_file():
        pytest.skip(f"no pod VM image at {image_path()} (podvm-image/build; "
                    ".ci/setup.d/40-podvm-image.sh builds it)")
    workdir = tmp_path_factory.mktemp("podvm-root")
    try:
        yield RootFs(image_path(), workdir)
    except Unavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    return dict(json.loads(manifest_path().read_text()))


def files_under(top: Path) -> Iterator[Path]:
    for path in top.rglob("*"):
        if path.is_file() and not path.is_symlink():
            yield path


def test_no_private_key_is_baked_in(rootfs: RootFs, tmp_path: Path) -> None:
    found = []
    scanned = 0
    for top in SCANNED:
        if not rootfs.exists(top):
            continue
        for path in files_under(rootfs.dump(top, tmp_path / top.strip("/"))):
            scanned += 1
            if PRIVATE_KEY.search(path.read_bytes()):
                found.append(str(path.relative_to(tmp_path)))
    assert scanned > 1000  # the trees were really read (the venv alone has thousands)
    assert found == []


def test_no_password_hash(rootfs: RootFs, manifest: dict[str, Any]) -> None:
    for name in ("/etc/shadow", "/etc/gshadow"):
        entries = [line.split(":") for line in rootfs.read(name).decode().splitlines() if line]
        assert entries, name
        hashes = {e[0]: e[1] for e in entries if e[1] not in NOT_A_PASSWORD}
        assert hashes == {}, name
    root = next(line for line in rootfs.read("/etc/shadow").decode().splitlines()
                if line.startswith("root:"))
    if manifest["variant"] == "default":
        assert root.split(":")[1] == "*"  # no login at all, not even an empty password


def test_no_ssh_host_key_no_machine_id(rootfs: RootFs) -> None:
    ssh = [e.name for e in rootfs.list("/etc/ssh") if e.name.startswith("ssh_host_")]
    assert ssh == []
    assert rootfs.exists("/etc/machine-id")
    assert rootfs.read("/etc/machine-id") == b""  # systemd makes one at each first boot
    assert not rootfs.exists("/var/lib/dbus/machine-id")
    assert not rootfs.exists("/var/lib/systemd/random-seed")


def test_the_units_are_installed_enabled_and_ordered(rootfs: RootFs) -> None:
    installed = {
        name: units.parse(rootfs.read(f"/etc/systemd/system/{name}").decode())
        for name in units.UNITS
    }
    assert units.chain_order(installed) == list(units.CHAIN)
    wants = {e.name: e for e in rootfs.list("/etc/systemd/system/multi-user.target.wants")}
    for name in (*units.CHAIN, "systemd-networkd.service"):
        assert name in wants and wants[name].is_link, name
    target = rootfs.link_target(f"/etc/systemd/system/multi-user.target.wants/{units.CHAIN[-1]}")
    assert target == f"/etc/systemd/system/{units.CHAIN[-1]}"


def test_the_python_side_is_installed(rootfs: RootFs, manifest: dict[str, Any]) -> None:
    bins = {e.name for e in rootfs.list("/opt/peerpods/bin")}
    assert {"python", "agent-protocol-forwarder", "process-user-data", "attestation-agent",
            "confidential-data-hub", "api-server-rest"} <= bins
    assert "pip" not in bins
    shebang = rootfs.read("/opt/peerpods/bin/agent-protocol-forwarder").splitlines()[0]
    assert shebang == b"#!/opt/peerpods/bin/python3"
    python = manifest["python_distributions"]
    assert python["peerpods"] == manifest["project"]["version"]
    assert {"jwcrypto", "rfc8785", "cryptography", "protobuf"} <= {n.lower() for n in python}


def test_the_tpm_attesters_binding_and_its_libraries_are_in_the_image(
    rootfs: RootFs, manifest: dict[str, Any], tmp_path: Path
) -> None:
    """tpm2-pytss (built from its sdist by the build) is installed, and every library its
    compiled module needs is in the image (the build also imports it inside the root)."""
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("readelf (binutils) is not installed")
    assert "tpm2-pytss" in {n.lower() for n in manifest["python_distributions"]}
    site = next(e.name for e in rootfs.list("/opt/peerpods/lib") if e.name.startswith("python3"))
    binding = rootfs.dump(f"/opt/peerpods/lib/{site}/site-packages/tpm2_pytss", tmp_path)
    modules = list(binding.glob("_libtpm2_pytss*.so"))
    assert len(modules) == 1, sorted(p.name for p in binding.iterdir())
    dynamic = subprocess.run([readelf, "-d", str(modules[0])], check=True, capture_output=True,
                             text=True).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dynamic)
    assert "libtss2-esys.so.0" in needed
    libdirs = ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu")
    present = {e.name for d in libdirs for e in rootfs.list(d)}
    assert set(needed) <= present, sorted(set(needed) - present)


def test_slots_and_the_development_agent(rootfs: RootFs, manifest: dict[str, Any]) -> None:
    slots = manifest["slots"]
    agent = slots["kata-agent"]
    if agent.startswith("development agent"):
        wrapper = rootfs.read("/usr/local/bin/kata-agent").decode()
        assert "-m providers.local.devagent --socket /run/kata-containers/agent.sock" in wrapper
        assert "--allow-exec" in wrapper  # what tests/podvm_image look inside the VM with
    elif agent == "missing":
        assert not rootfs.exists("/usr/local/bin/kata-agent")
        assert "kata-agent" in manifest["missing"]
    else:  # a binary given to the build
        installed = hashlib.sha256(rootfs.read("/usr/local/bin/kata-agent")).hexdigest()
        assert agent == f"binary sha256={installed}"
    for name in ("attestation-agent", "confidential-data-hub", "api-server-rest"):
        if slots[name].startswith("binary sha256="):
            installed = hashlib.sha256(rootfs.read(f"/usr/local/bin/{name}")).hexdigest()
            assert slots[name] == f"binary sha256={installed}"
        else:
            assert slots[name] == "python (this project)"
            assert manifest["guest_components"] == "python"
    setting = rootfs.read("/etc/peerpods/guest-components").decode()
    assert setting == f"GUEST_COMPONENTS={manifest['guest_components']}\n"
    assert rootfs.read("/etc/agent-config.toml").startswith(b"# kata-agent's configuration")
    assert rootfs.link_target("/etc/kata-opa/default-policy.rego") == "/run/peerpod/policy.rego"
    assert {"allow-all.rego", "allow-all-except-exec-process.rego",
            "disallow-all-except-setpolicy.rego"} <= {e.name for e in rootfs.list("/etc/kata-opa")}


def test_the_variant_is_what_the_manifest_says(rootfs: RootFs, manifest: dict[str, Any]) -> None:
    fstab = rootfs.read("/etc/fstab").decode().splitlines()
    usr_bin = {e.name for e in rootfs.list("/usr/bin")}
    assert usr_bin & set(COMPILERS) == set()
    debug_tmpfiles = rootfs.exists("/etc/tmpfiles.d/peerpods-debug.conf")
    if manifest["variant"] == "default":
        assert fstab[0].split()[:4] == ["LABEL=podvmroot", "/", "ext4", "ro,errors=remount-ro"]
        assert "sshd" not in {e.name for e in rootfs.list("/usr/sbin")}
        assert not debug_tmpfiles  # no allow-all fallback policy
        getty = rootfs.link_target("/etc/systemd/system/serial-getty@.service")
        assert getty == "/dev/null"
    else:
        assert fstab[0].split()[3] == "defaults,errors=remount-ro"
        assert debug_tmpfiles
        autologin = rootfs.read("/etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf")
        assert b"--autologin root" in autologin
        # sshd makes its host keys at first boot, never at build time
        keygen = rootfs.read("/etc/systemd/system/ssh.service.d/host-keys.conf")
        assert b"ExecStartPre=/usr/bin/ssh-keygen -A" in keygen
        assert "sshd" in {e.name for e in rootfs.list("/usr/sbin")}


def test_the_disk_boots_both_ways_and_matches_the_manifest(
    rootfs: RootFs, manifest: dict[str, Any]
) -> None:
    table = rootfs.partition_table
    assert table["label"] == "gpt"
    names = [(p.get("name"), p["type"]) for p in table["partitions"]]
    assert names == [("bios", "21686148-6449-6E6F-744E-656564454649"),
                     ("esp", "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
                     ("root", "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709")]
    kernels = [e.name for e in rootfs.list("/boot") if e.name.startswith("vmlinuz-")]
    assert kernels and any(e.name.startswith("initrd.img-") for e in rootfs.list("/boot"))
    digest = hashlib.sha256(image_path().read_bytes()).hexdigest()
    assert manifest["images"][image_path().name]["sha256"] == digest
    for name, output in manifest["images"].items():  # raw and VHD conversions, when built
        assert image_path().with_name(name).stat().st_size == output["bytes"], name
    if "podvm.vhd" in manifest["images"]:
        footer = image_path().with_name("podvm.vhd").read_bytes()[-512:]
        assert footer.startswith(b"conectix")  # a fixed VHD: the footer closes the file
    assert manifest["boot"] == ["uefi", "bios"]
    assert manifest["debian_packages"]["systemd"]
    assert manifest["inputs_sha256"] == image_path().with_name(
        image_path().name + ".stamp").read_text().strip()


def test_the_key_detector_finds_keys_not_code_that_names_their_armour() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    for form in (serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.OpenSSH,
                 serialization.PrivateFormat.TraditionalOpenSSL):
        pem = key.private_bytes(serialization.Encoding.PEM, form,
                                serialization.NoEncryption())
        assert PRIVATE_KEY.search(b"KEY = '''" + pem + b"'''\n"), form
    encrypted = key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.BestAvailableEncryption(b"secret"))
    assert b"Proc-Type:" in encrypted and PRIVATE_KEY.search(encrypted)
    code = b'START = b"-----BEGIN OPENSSH PRIVATE KEY-----"\nEND = b"-----END OPENSSH'
    assert PRIVATE_KEY.search(code) is None
