"""The built images (Dockerfile, image/build), run in a chroot: upstream's DaemonSet command
starts the adaptor with the provider and flags it should, and every console script, ssh and
the providers' SDKs work in both targets."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.image.builtimage import REPO, TARGETS, MountedImage, Unavailable, mounted

pytestmark = pytest.mark.root

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
SCRIPTS = sorted(PYPROJECT["project"]["scripts"])
#: The extras requirements/compile.sh locks into requirements/image.txt.
IMAGE_EXTRAS = re.findall(r"--extra (\w+)", re.search(
    r"^\s*--extra .*-o requirements/image\.txt$",
    (REPO / "requirements" / "compile.sh").read_text(), flags=re.MULTILINE).group(0))


@pytest.fixture(scope="module", params=TARGETS)
def image(request: pytest.FixtureRequest) -> Iterator[MountedImage]:
    try:
        with mounted(request.param) as built:
            yield built
    except Unavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def adaptor_image() -> Iterator[MountedImage]:
    try:
        with mounted("cloud-api-adaptor") as built:
            yield built
    except Unavailable as exc:
        pytest.skip(str(exc))


def _server_config(stderr: str) -> dict[str, object]:
    match = re.search(r"server config: (\{.*\})$", stderr, flags=re.MULTILINE)
    assert match is not None, stderr
    config: dict[str, object] = json.loads(match.group(1))
    return config


def _wait_ready(notify: socket.socket, proc: subprocess.Popen[str], deadline: float) -> None:
    """Until the adaptor sends READY=1 (sd_notify), it exits, or the deadline passes."""
    while time.monotonic() < deadline:
        notify.settimeout(max(0.1, min(1.0, deadline - time.monotonic())))
        try:
            message = notify.recv(4096).decode()
        except TimeoutError:
            if proc.poll() is not None:
                _, stderr = proc.communicate()
                pytest.fail(f"the adaptor exited with {proc.returncode}:\n{stderr}")
            continue
        if "READY=1" in message.split("\n"):
            return
    proc.kill()
    _, stderr = proc.communicate()
    pytest.fail(f"no READY=1 from the adaptor in time:\n{stderr}")


def test_upstreams_daemonset_command_starts_the_adaptor(
    adaptor_image: MountedImage, tmp_path: Path
) -> None:
    """``/usr/local/bin/entrypoint.sh`` with a peer-pods-cm's env for libvirt (libvirt's test
    driver in place of a host), as upstream's DaemonSet runs it: the adaptor serves its
    socket, says READY, logs the provider and flags it runs with, and stops on SIGTERM."""
    env = {
        "CLOUD_PROVIDER": "libvirt", "LIBVIRT_URI": "test:///default", "LIBVIRT_NET": "default",
        "NODE_NAME": "image-test-node", "POD_UID": "3f6c1f64-image-test",
        "PEERPODS_LIMIT_PER_NODE": "10", "VXLAN_PORT": "4789", "PROBE_PORT": "0",
        "NOTIFY_SOCKET": "/run/test-notify/notify.sock",
    }
    command = adaptor_image.command(["/usr/local/bin/entrypoint.sh"], env,
                                    binds={tmp_path: "/run/test-notify"})
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(tmp_path / "notify.sock"))
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        try:
            _wait_ready(notify, proc, time.monotonic() + 120)
            assert (adaptor_image.root / "run" / "peerpod" / "hypervisor.sock").is_socket()
            proc.terminate()
            _, stderr = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, stderr
    assert "+ exec cloud-api-adaptor libvirt -data-dir /opt/data-dir\n" in stderr
    config = _server_config(stderr)
    assert config["provider"] == "libvirt"
    libvirt = config["libvirt"]
    assert isinstance(libvirt, dict)
    assert (libvirt["uri"], libvirt["data_dir"], libvirt["network_name"]) == (
        "test:///default", "/opt/data-dir", "default")
    common = config["common"]
    assert isinstance(common, dict)
    assert (common["node_name"], common["vxlan_port"]) == ("image-test-node", 4789)


def test_the_adaptor_refuses_external_plugins(adaptor_image: MountedImage) -> None:
    env = {"CLOUD_PROVIDER": "libvirt", "LIBVIRT_URI": "test:///default", "PROBE_PORT": "0",
           "ENABLE_CLOUD_PROVIDER_EXTERNAL_PLUGIN": "true",
           "CLOUD_PROVIDER_EXTERNAL_PLUGIN_PATH": "/cloud-providers/libvirt.so"}
    done = adaptor_image.run(["/usr/local/bin/entrypoint.sh"], env)
    assert done.returncode == 1
    assert "external cloud-provider plugins (Go .so files" in done.stderr


def test_the_entrypoint_is_this_trees(adaptor_image: MountedImage) -> None:
    installed = adaptor_image.root / "usr" / "local" / "bin" / "entrypoint.sh"
    assert installed.read_bytes() == (REPO / "image" / "entrypoint.sh").read_bytes()
    assert installed.stat().st_mode & 0o111 == 0o111
    assert adaptor_image.config.get("Entrypoint") == ["cloud-api-adaptor"]


def test_version(image: MountedImage) -> None:
    done = image.run(["cloud-api-adaptor", "version"])
    assert done.returncode == 0, done.stderr
    version = PYPROJECT["project"]["version"]
    assert re.fullmatch(rf"cloud-api-adaptor version {re.escape(version)}\n"
                        r"  commit: \S+\n  python: 3\.11\.\d+\n", done.stdout), done.stdout


def test_ssh_client_for_qemu_ssh_uris(image: MountedImage) -> None:
    done = image.run(["ssh", "-V"])
    assert done.returncode == 0
    assert done.stderr.startswith("OpenSSH_")


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_console_script_runs(image: MountedImage, script: str) -> None:
    done = image.run([script, "--help"])
    assert done.returncode == 0, f"{script} --help in {image.reference}:\n{done.stderr}"
    assert (image.root / "usr" / "local" / "bin" / script).is_symlink()


def test_every_extra_is_installed_and_libvirt_loads(image: MountedImage) -> None:
    """The distributions of the extras locked for the image (the providers' SDKs, the guest
    side), and libvirt-python's C module against the image's libvirt0."""
    probe = (
        "import importlib.metadata as m, re, sys, libvirt\n"
        "names, missing = [], []\n"
        "for r in m.requires('peerpods'):\n"
        "    mark = re.search(r'extra == \"([^\"]+)\"', r)\n"
        "    if mark and mark.group(1) in sys.argv[1:]:\n"
        "        names.append(re.match(r'[A-Za-z0-9_.-]+', r).group(0))\n"
        "for name in names:\n"
        "    try:\n"
        "        m.distribution(name)\n"
        "    except m.PackageNotFoundError:\n"
        "        missing.append(name)\n"
        "print(len(names), missing, libvirt.getVersion() > 0)\n"
    )
    done = image.run(["/opt/peerpods/bin/python", "-c", probe, *IMAGE_EXTRAS])
    assert done.returncode == 0, done.stderr
    count, missing, loaded = done.stdout.split(" ", 2)
    assert int(count) >= len(IMAGE_EXTRAS)
    assert (missing, loaded.strip()) == ("[]", "True")


def test_the_default_command(image: MountedImage) -> None:
    if image.target == "cloud-api-adaptor":
        assert image.config.get("Entrypoint") == ["cloud-api-adaptor"]
        return
    assert image.config.get("Cmd") == ["peerpod-ctrl"]
    if "peerpod-ctrl" not in SCRIPTS:
        pytest.skip("peerpod-ctrl is not a console script of this tree yet")
    assert (image.root / "usr" / "local" / "bin" / "peerpod-ctrl").is_symlink()


def test_runs_as_root_with_the_project_in_a_venv(image: MountedImage) -> None:
    assert image.config.get("User") in (None, "", "root", "0")
    cfg = (image.root / "opt" / "peerpods" / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = false" in cfg
    link = Path("/opt/peerpods/bin/cloud-api-adaptor")
    assert (image.root / "usr" / "local" / "bin" / "cloud-api-adaptor").readlink() == link


def test_the_installed_sources_are_this_trees(image: MountedImage) -> None:
    """Every module of the tree is in the image as it is here (a stale layer cache would
    leave older ones); only the COMMIT line of adaptor/cli.py is the build's."""
    site = next((image.root / "opt" / "peerpods" / "lib").glob("python3.*/site-packages"))
    packages = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    checked, differ = 0, []
    for top in (p.rstrip("*") for p in packages):
        for source in sorted((REPO / top).rglob("*.py")):
            relative = source.relative_to(REPO)
            installed = site / relative
            if not installed.is_file():
                differ.append(f"{relative} (missing)")
                continue
            ours, theirs = source.read_text(), installed.read_text()
            if relative == Path("adaptor/cli.py"):
                ours, theirs = (re.sub(r'^COMMIT = ".*"', "COMMIT", text, flags=re.MULTILINE)
                                for text in (ours, theirs))
            checked += 1
            if ours != theirs:
                differ.append(str(relative))
    assert checked > 100
    assert not differ, f"the image's modules differ from the tree's: {differ[:10]}"
