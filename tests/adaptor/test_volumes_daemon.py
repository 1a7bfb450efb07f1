"""CSI block volumes through the daemon: CreateVM puts the disk ids in the spec, StartVM
hands them to the provider (or the provider refuses them), CreateContainer through the agent
proxy carries the annotations, and a malformed ``mountInfo.json`` fails CreateVM cleanly."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adaptor.proxy.cloudvolumes import CLOUD_VOLUMES_KEY, TARGET_PATH_KEY
from adaptor.server import Daemon
from protocols.kata import agent_pb2, oci_pb2
from protocols.ttrpc import Client, Code
from providers.kit import SPEC_FIELDS
from tests.adaptor.conftest import FAST_RETRY, make_settings
from tests.adaptor.helpers import expect_error
from tests.adaptor.shim import Shim, shim_annotations
from tests.adaptor.test_volumes import UID, ebs, publish, volume_path
from tests.fakes.cloud import FakeCloud
from tests.fakes.network import FakeWorkerNetwork


@pytest.fixture
def volumes_dir(short_dir: str) -> Path:
    path = Path(short_dir) / "direct-volumes"
    path.mkdir()
    return path


@pytest.fixture
async def vdaemon(
    short_dir: str, cloud: FakeCloud, network: FakeWorkerNetwork, volumes_dir: Path
) -> AsyncIterator[Shim]:
    settings = make_settings(short_dir, cloud.port)
    async with Daemon(settings, cloud.provider, network=network, delete_retry=FAST_RETRY,
                      direct_volumes_dir=str(volumes_dir)):
        yield Shim(settings.socket)


def exists(path: str) -> bool:
    return os.path.exists(path)


def rewrite_entries(directory: Path, info: object) -> None:
    for entry in directory.iterdir():
        (entry / "mountInfo.json").write_text(json.dumps(info))


def pod(**extra: str) -> dict[str, str]:
    return {**shim_annotations(), **extra}


async def test_volumes_reach_the_provider_and_the_agent(
    vdaemon: Shim, cloud: FakeCloud, volumes_dir: Path
) -> None:
    cloud.provider.honoured = SPEC_FIELDS  # this fake cloud attaches disks
    first, second = volume_path("pvc-1"), volume_path("pvc-2")
    publish(volumes_dir, first, ebs("vol-00000001"))
    publish(volumes_dir, second, ebs("vol-00000002", **{"encrypt-type": "LUKS",
                                                         "kbs-key-id": "default/key/k"}))
    path = await vdaemon.create_vm("sb-vol", pod(**{"io.kubernetes.cri.sandbox-uid": UID}))
    await vdaemon.start_vm("sb-vol")
    request = cloud.provider.requests[cloud.provider.created[0]]
    disks = request.spec.volumes
    assert sorted(disks) == ["vol-00000001", "vol-00000002"]
    order = [first if d == "vol-00000001" else second for d in disks]
    oci = oci_pb2.Spec(
        Mounts=[oci_pb2.Mount(destination=f"/d{i}", source=p, type="bind")
                for i, p in enumerate(order)],
        Annotations={"io.kubernetes.cri.sandbox-uid": UID},
    )
    payload = agent_pb2.CreateContainerRequest(container_id="c1", OCI=oci)
    async with await Client.connect_unix(path) as conn:
        await conn.call_raw("grpc.AgentService", "CreateContainer", payload.SerializeToString())
    got = agent_pb2.CreateContainerRequest()
    got.ParseFromString(cloud.agents["sb-vol"].calls[-1].payload)
    assert got.OCI.Annotations[TARGET_PATH_KEY] == ",".join(order)
    volumes = json.loads(got.OCI.Annotations[CLOUD_VOLUMES_KEY])
    for index, disk in enumerate(disks):  # LUN N is the provider's volume N
        assert volumes[f"vol-{index}"]["disk_id"] == disk
        assert volumes[f"vol-{index}"]["mount_point"] == f"/d{index}"
        assert volumes[f"vol-{index}"]["lun"] == str(index)
    assert volumes[f"vol-{disks.index('vol-00000002')}"]["key_id"] == "default/key/k"
    await vdaemon.stop_vm("sb-vol")


async def test_provider_without_volumes_refuses_at_start_vm(
    vdaemon: Shim, cloud: FakeCloud, volumes_dir: Path
) -> None:
    publish(volumes_dir, volume_path("pvc-1"), ebs("vol-00000001"))
    await vdaemon.create_vm("sb-novol")
    exc = await expect_error(vdaemon.start_vm("sb-novol"))
    assert "cannot honour volumes=('vol-00000001',)" in exc.message
    assert cloud.provider.instances == {}
    await vdaemon.stop_vm("sb-novol")


async def test_malformed_mount_info_fails_create_vm(
    vdaemon: Shim, cloud: FakeCloud, volumes_dir: Path, network: FakeWorkerNetwork,
    short_dir: str,
) -> None:
    publish(volumes_dir, volume_path("pvc-bad"), {"device": ["not", "a", "string"]})
    exc = await expect_error(vdaemon.create_vm("sb-bad"))
    assert exc.code == Code.INVALID_ARGUMENT
    assert "mountInfo.json: device is not a string" in exc.message
    assert network.allocated == {}
    assert not exists(os.path.join(short_dir, "p", "sb-bad"))
    # The daemon keeps serving once the entry is fixed.
    rewrite_entries(volumes_dir, ebs("vol-00000009"))
    cloud.provider.honoured = SPEC_FIELDS
    await vdaemon.create_vm("sb-bad")
    await vdaemon.start_vm("sb-bad")
    assert cloud.provider.requests[cloud.provider.created[0]].spec.volumes == ("vol-00000009",)
    await vdaemon.stop_vm("sb-bad")
