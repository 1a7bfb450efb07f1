"""Fixtures for the libvirt provider tests against libvirt's built-in test driver.

``test:///default`` keeps one shared state for the whole process (it survives closing every
connection), so each test uses names of its own and the ``env`` fixture removes
whatever a test left behind.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import timedelta

import pytest

libvirt = pytest.importorskip("libvirt")

from providers.base import InstanceRequest, InstanceSpec  # noqa: E402
from providers.libvirt import Settings  # noqa: E402
from providers.libvirt.connection import Connection  # noqa: E402, F401  (silences libvirt)
from providers.libvirt.provider import LibvirtProvider  # noqa: E402

TEST_URI = "test:///default"
TEST_POOL = "default-pool"
BASE_CAPACITY = 3 * 1024**3


@dataclass
class Uploads:
    """Stands in for the stream upload the test driver lacks: records what would be sent."""

    data: dict[str, bytes] = field(default_factory=dict)
    fail_with: BaseException | None = None

    def __call__(self, conn: object, vol: object, image: bytes) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.data[vol.path()] = image  # type: ignore[attr-defined]


@dataclass
class DriverEnv:
    conn: object
    base_volume: str
    settings: Settings
    uploads: Uploads

    def provider(self, **changes: object) -> LibvirtProvider:
        settings = replace(self.settings, **changes)  # type: ignore[arg-type]
        return LibvirtProvider(settings, node_name="node-a", uploader=self.uploads)

    def pool(self) -> object:
        return self.conn.storagePoolLookupByName(TEST_POOL)  # type: ignore[attr-defined]

    def volume_names(self) -> set[str]:
        return {v.name() for v in self.pool().listAllVolumes()}  # type: ignore[attr-defined]

    def domain_names(self) -> set[str]:
        return {d.name() for d in self.conn.listAllDomains(0)}  # type: ignore[attr-defined]


def make_request(
    name: str | None = None, sandbox_id: str | None = None, **spec: object
) -> InstanceRequest:
    sid = sandbox_id or uuid.uuid4().hex
    return InstanceRequest(
        name=name or f"podvm-web-{sid[:8]}",
        sandbox_id=sid,
        pod_name="web",
        pod_namespace="default",
        user_data=b"#cloud-config\nwrite_files: []\n",
        spec=InstanceSpec(**spec),  # type: ignore[arg-type]
        tags={"peerpods-node": "node-a"},
    )


@pytest.fixture
def env() -> Iterator[DriverEnv]:
    conn = libvirt.open(TEST_URI)
    pool = conn.storagePoolLookupByName(TEST_POOL)
    domains_before = {d.UUIDString() for d in conn.listAllDomains(0)}
    volumes_before = {v.name() for v in pool.listAllVolumes()}
    base = f"base-{uuid.uuid4().hex[:8]}.qcow2"
    pool.createXML(
        f"<volume><name>{base}</name><capacity unit='bytes'>{BASE_CAPACITY}</capacity>"
        "<target><format type='qcow2'/></target></volume>",
        0,
    )
    settings = Settings(
        uri=TEST_URI,
        pool_name=TEST_POOL,
        network_name="default",
        vol_name=base,
        cpu=2,
        memory=2048,
        ip_timeout=timedelta(seconds=5),
    )
    yield DriverEnv(conn=conn, base_volume=base, settings=settings, uploads=Uploads())
    for dom in conn.listAllDomains(0):
        if dom.UUIDString() not in domains_before:
            if dom.isActive():
                dom.destroy()
            dom.undefine()
    for vol in pool.listAllVolumes():
        if vol.name() not in volumes_before:
            vol.delete(0)
    conn.close()


@pytest.fixture(scope="session")
def libvirtd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real libvirtd with QEMU, running in a network namespace of its own."""
    from tests.providers.libvirt import libvirtd as daemon

    try:
        daemon.check_prerequisites()
    except daemon.Unavailable as exc:
        pytest.skip(f"real libvirtd unavailable: {exc}")
    with daemon.running_libvirtd(tmp_path_factory.mktemp("libvirtd")) as running:
        yield running
