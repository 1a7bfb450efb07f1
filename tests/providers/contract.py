"""The providers under the contract suite: one factory per provider, each against a real peer
or the provider's loopback fake (moto_server for AWS, libvirt's ``test:///default``, real
processes and namespaces for local, a dict for the fake).

A new provider plugs in by adding one factory to :data:`FACTORIES`. A factory gets the
pytest request (to pull the fixtures it needs) and the test's node name, and returns a
:class:`Subject`.
"""

from __future__ import annotations

import asyncio
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from providers.base import InstanceSpec, Provider
from tests.fakes.cloudapi import CloudAPI

Residue = Callable[[str], Awaitable[set[str]]]


async def _no_residue(_name: str) -> set[str]:
    return set()


def _default_user_data(_name: str) -> bytes:
    return b"#cloud-config\nwrite_files: []\n"


@dataclass
class VolumeKit:
    """The cloud side of CSI block volumes, for a provider that attaches them.

    ``make(n)`` creates ``n`` free disks and returns their ids; ``attached(instance_id)`` the
    ids of the disks attached to the instance in attachment order (LUN, device name);
    ``free(ids)`` whether every one of them still exists and is attached to nothing.
    """

    make: Callable[[int], Awaitable[tuple[str, ...]]]
    attached: Callable[[str], Awaitable[list[str]]]
    free: Callable[[tuple[str, ...]], Awaitable[bool]]


@dataclass
class Subject:
    """One provider under test.

    ``make()`` builds a provider on the good configuration (a new object per call, so that
    ``aclose`` can be exercised without breaking the clean-up); ``make_bad()`` one whose
    configuration names a resource that does not exist. ``unsupported`` is a spec this
    provider must refuse, naming ``unsupported_field``. ``residue(name)`` lists what the
    cloud still holds for the instance called ``name`` besides the instance itself (volumes,
    directories). ``slow_create()`` makes the next creates take a while (for the
    cancellation test). ``unknown_id`` is well-formed for the provider but names nothing.
    ``volumes`` is ``None`` for a provider that refuses CSI block volumes.
    """

    make: Callable[[], Provider]
    make_bad: Callable[[], Provider]
    unsupported: InstanceSpec
    unsupported_field: str
    unknown_id: str
    residue: Residue = _no_residue
    slow_create: Callable[[], None] = lambda: None
    user_data: Callable[[str], bytes] = _default_user_data
    volumes: VolumeKit | None = None
    made: list[Provider] = field(default_factory=list)


Factory = Callable[[pytest.FixtureRequest, str], Subject]


def fake(request: pytest.FixtureRequest, node: str) -> Subject:
    from providers.fake import Faults, InMemoryProvider

    shared = InMemoryProvider()  # one cloud: every make() returns it

    def slow() -> None:
        shared.faults.create_delay = 0.3

    async def residue(name: str) -> set[str]:
        return {i.id for i in shared.instances.values() if i.name == name}

    return Subject(
        make=lambda: shared,
        make_bad=lambda: InMemoryProvider(faults=Faults(config_error="fake cloud: bad key")),
        unsupported=InstanceSpec(volumes=("vol-1",)),
        unsupported_field="volumes",
        unknown_id="i-9999",
        residue=residue,
        slow_create=slow,
    )


def aws(request: pytest.FixtureRequest, node: str) -> Subject:
    from providers.aws.provider import AwsProvider
    from tests.providers.aws.conftest import World, alive_ids, base_settings
    from tests.providers.aws.ec2proxy import Ec2Proxy
    from tests.providers.aws.test_volumes import make_volume

    world: World = request.getfixturevalue("world")
    proxy: Ec2Proxy = request.getfixturevalue("proxy")
    ec2 = request.getfixturevalue("ec2")
    proxy.honour_client_token = True  # as EC2 does; moto itself ignores ClientToken
    settings = base_settings(world, proxy.url)

    def slow() -> None:
        proxy.delays["RunInstances"] = 0.3

    async def residue(name: str) -> set[str]:
        return alive_ids(ec2, {"Name": name})

    async def make_volumes(count: int) -> tuple[str, ...]:
        return tuple(make_volume(ec2, world, f"contract-{i}") for i in range(count))

    async def attached(instance_id: str) -> list[str]:
        found = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id",
                                               "Values": [instance_id]}])["Volumes"]
        pairs = [(a["Device"], v["VolumeId"]) for v in found for a in v["Attachments"]
                 if a["InstanceId"] == instance_id and a["Device"].startswith("/dev/xvd")]
        return [volume_id for _device, volume_id in sorted(pairs, key=lambda p: (len(p[0]),
                                                                                 p[0]))]

    async def free(volume_ids: tuple[str, ...]) -> bool:
        found = ec2.describe_volumes(VolumeIds=list(volume_ids))["Volumes"]
        return len(found) == len(volume_ids) and all(
            v["State"] == "available" and not v["Attachments"] for v in found)

    return Subject(
        make=lambda: AwsProvider(settings, node_name=node, poll_interval=0.05),
        make_bad=lambda: AwsProvider(replace(settings, image_id="ami-00000000"),
                                     node_name=node),
        unsupported=InstanceSpec(gpu_model="nvidia-a100"),  # multi_nic is a second ENI
        unsupported_field="gpu_model",
        unknown_id="i-0123456789abcdef0",
        residue=residue,
        slow_create=slow,
        volumes=VolumeKit(make_volumes, attached, free),
    )


def libvirt(request: pytest.FixtureRequest, node: str) -> Subject:
    from providers.libvirt.provider import LibvirtProvider
    from providers.libvirt.volume import VolumeNames

    env = request.getfixturevalue("env")  # tests.providers.libvirt.conftest

    async def residue(name: str) -> set[str]:
        names = VolumeNames.for_instance(name)
        return ({names.root, names.cidata} & env.volume_names()) | (
            {name} & env.domain_names()
        )

    async def make_volumes(count: int) -> tuple[str, ...]:
        from tests.providers.libvirt.test_datadisks import make_volumes as make

        return make(env, count)

    async def attached(instance_id: str) -> list[str]:
        from tests.providers.libvirt.test_datadisks import data_disks

        dom = env.conn.lookupByUUIDString(instance_id)
        return [disk[2] for disk in sorted(data_disks(ET.fromstring(dom.XMLDesc(0))))]

    async def free(paths: tuple[str, ...]) -> bool:
        pool_paths = {v.path() for v in env.pool().listAllVolumes()}
        used = {s.get("file") for d in env.conn.listAllDomains(0)
                for s in ET.fromstring(d.XMLDesc(0)).findall("devices/disk/source")}
        return set(paths) <= pool_paths and not set(paths) & used

    return Subject(
        make=lambda: LibvirtProvider(env.settings, node_name=node, uploader=env.uploads),
        make_bad=lambda: LibvirtProvider(replace(env.settings, pool_name="no-such-pool"),
                                         node_name=node, uploader=env.uploads),
        unsupported=InstanceSpec(instance_type="m6a.large"),
        unsupported_field="instance_type",
        unknown_id=str(uuid.uuid4()),
        residue=residue,
        volumes=VolumeKit(make_volumes, attached, free),
    )


def local(request: pytest.FixtureRequest, node: str) -> Subject:
    import secrets

    from providers.local.provider import LocalProvider
    from providers.local.settings import LocalSettings
    from tests.providers.local.conftest import user_data

    state: Path = request.getfixturevalue("state_dir")
    tls = request.getfixturevalue("agent_tls")
    tag = secrets.token_hex(3)
    settings = LocalSettings(
        subnet=f"198.18.{int(tag[:2], 16)}.0/24", bridge=f"pptc{tag}",
        state_dir=str(state), netns="on",
    )
    request.addfinalizer(lambda: _delete_link(settings.bridge))

    def entries() -> set[str]:
        return {p.name for p in state.iterdir()} if state.exists() else set()

    async def residue(name: str) -> set[str]:
        return await asyncio.to_thread(entries)

    return Subject(
        make=lambda: LocalProvider(settings, node_name=node),
        make_bad=lambda: LocalProvider(replace(settings, forwarder=str(state / "missing")),
                                       node_name=node),
        unsupported=InstanceSpec(gpus=1),
        unsupported_field="gpus",
        unknown_id="0123456789",
        residue=residue,
        user_data=lambda name: user_data(tls, name, None),
    )


@pytest.fixture
async def cloud_api(tmp_path: Path) -> AsyncIterator[CloudAPI]:
    """The loopback fake cloud API (``tests.fakes.cloudapi``), its VMs not booted."""
    api = CloudAPI(str(tmp_path))
    api.cloud.boot = False
    await api.start()
    yield api
    await api.aclose()


def fakecloud(request: pytest.FixtureRequest, node: str) -> Subject:
    """The HTTP fake the subprocess adaptor tests use: the way a cloud without an emulator
    (Azure, GCP) plugs in, an SDK-less client against a loopback server."""
    from tests.fakes.httpprovider import HttpProvider, Settings

    api: CloudAPI = request.getfixturevalue("cloud_api")

    def closed_port() -> str:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return f"http://127.0.0.1:{sock.getsockname()[1]}"

    async def residue(name: str) -> set[str]:
        return {i.id for i in api.provider.instances.values() if i.name == name}

    def slow() -> None:
        api.provider.faults.create_delay = 0.3

    return Subject(
        make=lambda: HttpProvider(Settings(url=api.url)),
        make_bad=lambda: HttpProvider(Settings(url=closed_port())),
        unsupported=InstanceSpec(volumes=("vol-1",)),
        unsupported_field="volumes",
        unknown_id="i-9999",
        residue=residue,
        slow_create=slow,
    )


def gcp(request: pytest.FixtureRequest, node: str) -> Subject:
    """The real google-cloud-compute SDK against the loopback Compute endpoint."""
    from providers.gcp.provider import GcpProvider
    from tests.providers.gcp.conftest import base_settings
    from tests.providers.gcp.threaded import ThreadedComputeServer

    threaded = ThreadedComputeServer()
    url = threaded.start()
    request.addfinalizer(threaded.stop)
    server = threaded.server
    settings = base_settings(url)

    def slow() -> None:
        server.insert_polls = 10

    async def residue(name: str) -> set[str]:
        return {i["id"] for i in list(server.instances.values()) if i["name"] == name}

    return Subject(
        make=lambda: GcpProvider(settings, node_name=node, poll_interval=0.01),
        make_bad=lambda: GcpProvider(replace(settings, network="no-such-network"),
                                     node_name=node),
        unsupported=InstanceSpec(multi_nic=True),
        unsupported_field="multi_nic",
        unknown_id="4999999999999999999",
        residue=residue,
        slow_create=slow,
    )


def _delete_link(name: str) -> None:
    import subprocess

    subprocess.run(["ip", "link", "delete", "dev", name], capture_output=True, check=False)


# name -> (factory, marks). Azure and GCP add one line each, with their loopback fakes.
def azure(request: pytest.FixtureRequest, node: str) -> Subject:
    """The real Azure SDK against the loopback ARM endpoint (tests.providers.azure)."""
    from tests.providers.azure.armserver import ArmServer
    from tests.providers.azure.conftest import make

    server: ArmServer = request.getfixturevalue("arm")

    def slow() -> None:
        server.state.faults.operation_seconds = 0.3

    async def residue(name: str) -> set[str]:
        return server.state.residue(name)

    async def make_volumes(count: int) -> tuple[str, ...]:
        return tuple(server.state.add_disk(f"contract-{uuid.uuid4().hex[:8]}")
                     for _ in range(count))

    async def attached(instance_id: str) -> list[str]:
        vm = server.state.vms.get(instance_id.rsplit("/", 1)[-1].lower())
        found = (vm or {}).get("properties", {}).get("storageProfile", {}).get("dataDisks", [])
        return [d["managedDisk"]["id"] for d in sorted(found, key=lambda d: int(d["lun"]))]

    async def free(disk_ids: tuple[str, ...]) -> bool:
        disks = [server.state.disks.get(d.rsplit("/", 1)[-1].lower()) for d in disk_ids]
        return all(d is not None and not d.get("managedBy")
                   and d["properties"]["diskState"] == "Unattached" for d in disks)

    bad_image = server.state.resource_id("Microsoft.Compute", "images", "no-such-image")
    unknown = server.state.resource_id("Microsoft.Compute", "virtualMachines", "podvm-gone-0")
    return Subject(
        make=lambda: make(server, node),
        make_bad=lambda: make(server, node, image_id=bad_image),
        unsupported=InstanceSpec(multi_nic=True),
        unsupported_field="multi_nic",
        unknown_id=unknown,
        residue=residue,
        slow_create=slow,
        volumes=VolumeKit(make_volumes, attached, free),
    )


FACTORIES: dict[str, tuple[Factory, tuple[pytest.MarkDecorator, ...]]] = {
    "fake": (fake, ()),
    "local": (local, (pytest.mark.root, pytest.mark.netns)),
    "aws": (aws, ()),
    "libvirt": (libvirt, ()),
    "fakecloud": (fakecloud, ()),
    "gcp": (gcp, ()),
    "azure": (azure, ()),
}
