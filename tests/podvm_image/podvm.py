"""What the tests that boot the pod VM image share: a libvirtd whose pool holds the image,
the adaptor (libvirt provider) in its network namespace, and looks at libvirt's state.

Import it after ``pytest.importorskip("libvirt")``; the ``podvm_libvirtd`` fixture
(conftest.py) builds on :func:`libvirtd_with_image`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import libvirt
import pytest

from protocols.kata import health_pb2
from protocols.ttrpc import Client
from tests.podvm_image.image import image_path
from tests.providers.libvirt import libvirtd as daemon
from tests.providers.libvirt.adaptorproc import AdaptorInNetns, adaptor_session

VOLUME = "podvm-image.qcow2"
NO_NETNS = "/var/run/netns/cni-absent"  # no pod network: the pod netns does not exist
BOOT_TIMEOUT = 900.0  # StartVM under emulation on a shared machine, with margin


@contextlib.contextmanager
def libvirtd_with_image(workdir: Path) -> Iterator[daemon.Libvirtd]:
    """A libvirtd of the caller's own whose pool also holds the pod VM image (skips the test
    when there is no image or no libvirtd)."""
    if not image_path().is_file():
        pytest.skip(f"no pod VM image at {image_path()} (.ci/setup.d/40-podvm-image.sh)")
    try:
        daemon.check_prerequisites()
    except daemon.Unavailable as exc:
        pytest.skip(f"real libvirtd unavailable: {exc}")
    with daemon.running_libvirtd(workdir) as running:
        target = daemon.POOL_DIR / VOLUME
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
        try:
            os.link(image_path(), target)
        except OSError:
            shutil.copyfile(image_path(), target)
        refresh_pool(running)
        try:
            yield replace(running, base_volume=VOLUME)
        finally:
            target.unlink(missing_ok=True)


def refresh_pool(running: daemon.Libvirtd) -> None:
    conn = libvirt.open(daemon.URI)
    try:
        conn.storagePoolLookupByName(running.pool).refresh(0)
    finally:
        conn.close()


@contextlib.asynccontextmanager
async def running_adaptor(
    libvirtd: daemon.Libvirtd, env: Mapping[str, str], command: Sequence[str] = ()
) -> AsyncIterator[AdaptorInNetns]:
    """The adaptor (libvirt provider) for pod VMs of the image, with ``env`` on top of the
    test defaults; whatever pod VM it leaves behind is removed afterwards."""
    async with adaptor_session(libvirtd, "ppi", command, **{
        "LIBVIRT_CPU": "1",
        "LIBVIRT_MEMORY": "1024",
        "LIBVIRT_IP_TIMEOUT": "600s",
        "PROXY_TIMEOUT": "600s",
        **env,
    }) as (proc, _conn, _settings):
        yield proc


async def agent_check(socket_path: str) -> tuple[int, str]:
    """grpc.Health Check and Version through the adaptor's agent proxy."""
    async with await Client.connect_unix(socket_path) as client:
        check = await client.call("grpc.Health", "Check", health_pb2.CheckRequest(),
                                  health_pb2.HealthCheckResponse, timeout=60)
        version = await client.call("grpc.Health", "Version", health_pb2.CheckRequest(),
                                    health_pb2.VersionCheckResponse, timeout=60)
    return int(check.status), version.agent_version


def pool_volumes(libvirtd: daemon.Libvirtd) -> set[str]:
    conn = libvirt.open(daemon.URI)
    try:
        pool = conn.storagePoolLookupByName(libvirtd.pool)
        pool.refresh(0)
        return {v.name() for v in pool.listAllVolumes()}
    finally:
        conn.close()


def domain_names() -> set[str]:
    conn = libvirt.open(daemon.URI)
    try:
        return {d.name() for d in conn.listAllDomains(0)}
    finally:
        conn.close()
