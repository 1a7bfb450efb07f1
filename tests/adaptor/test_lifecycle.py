"""The daemon driven through its real unix sockets, as the Kata shim drives it."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

from adaptor.server import Daemon
from protocols import apf, initdata, userdata
from protocols.kata import agent_pb2, health_pb2, oci_pb2
from protocols.ttrpc import Client, Code, TTRPCError
from providers.base import NODE_TAG, POD_NAME_TAG, POD_NAMESPACE_TAG, SANDBOX_TAG
from tests.adaptor.helpers import eventually
from tests.adaptor.shim import Shim, shim_annotations
from tests.fakes.cloud import FakeCloud

SID = "3f1a0c2b9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a"
INITDATA_TOML = 'version = "0.1.0"\nalgorithm = "sha256"\n[data]\n"aa.toml" = "x = 1"\n'


async def test_whole_lifecycle(daemon: Daemon, cloud: FakeCloud, shim: Shim) -> None:
    assert await shim.version() == "0.0.0"
    annotations = shim_annotations(pod="Web_Server.1", namespace="prod",
                                   cc_init_data=INITDATA_TOML)
    socket_path = await shim.create_vm(SID, annotations)
    assert socket_path == os.path.join(daemon.settings.pods_dir, SID, "agent.ttrpc")
    assert cloud.provider.create_calls == 0  # no VM before StartVM

    # The debugging copy of apf.json is private: it holds the VM's TLS key.
    copy = os.path.join(daemon.settings.pods_dir, SID, "apf.json")
    assert stat.S_IMODE(os.stat(copy).st_mode) == 0o600

    await shim.start_vm(SID)
    assert cloud.provider.create_calls == 1
    instance_id = cloud.provider.created[0]
    request = cloud.provider.requests[instance_id]
    assert request.name == "podvm-web-server-1-3f1a0c2b"
    assert request.tags == {NODE_TAG: "node-1", SANDBOX_TAG: SID,
                            POD_NAME_TAG: "Web_Server.1", POD_NAMESPACE_TAG: "prod"}
    files = {f.path: f.content for f in userdata.parse(request.user_data)}
    assert set(files) == {userdata.APF_JSON_PATH, userdata.INITDATA_PATH}
    assert initdata.decode(files[userdata.INITDATA_PATH]) == INITDATA_TOML.encode()
    config = apf.loads(files[userdata.APF_JSON_PATH])
    assert (config.pod_name, config.pod_namespace) == ("Web_Server.1", "prod")
    assert "BEGIN CERTIFICATE" in config.tls_server_cert
    assert "PRIVATE KEY" in config.tls_server_key
    assert "BEGIN CERTIFICATE" in config.tls_client_ca
    assert apf.loads(Path(copy).read_text()) == config  # noqa: ASYNC240
    assert cloud.forwarders[SID].tls

    assert await shim.get_info("Web_Server.1", "prod") == instance_id

    agent = cloud.agents[SID]
    async with await Client.connect_unix(socket_path) as conn:
        health = await conn.call("grpc.Health", "Check", health_pb2.CheckRequest(),
                                 health_pb2.HealthCheckResponse, timeout=30)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        # Payload, metadata and deadline are passed through untouched.
        start = agent_pb2.StartContainerRequest(container_id="c1").SerializeToString()
        await conn.call_raw("grpc.AgentService", "StartContainer", start, timeout=20,
                            metadata=(("trace", "abc"),))
        last = agent.calls[-1]
        assert (last.method, last.payload) == ("StartContainer", start)
        assert ("trace", "abc") in last.metadata
        assert 15e9 < last.timeout_nano <= 20e9
        # No deadline in, no deadline out: the proxy adds none of its own.
        await conn.call_raw("grpc.AgentService", "DestroySandbox", b"")
        assert agent.calls[-1].timeout_nano == 0

    await shim.stop_vm(SID)
    assert cloud.provider.deleted == [instance_id]
    assert not Path(socket_path).exists()  # noqa: ASYNC240
    assert daemon.manager is not None and daemon.manager.record(SID) is None
    # Stopping again (or an id this adaptor never saw) is not an error.
    await shim.stop_vm(SID)


async def test_wait_process_does_not_block_check(
    daemon: Daemon, cloud: FakeCloud, shim: Shim
) -> None:
    path = await shim.create_vm("sb-wait")
    await shim.start_vm("sb-wait")
    agent = cloud.agents["sb-wait"]
    async with await Client.connect_unix(path) as conn:
        wait = asyncio.create_task(conn.call(
            "grpc.AgentService", "WaitProcess",
            agent_pb2.WaitProcessRequest(container_id="c1", exec_id="c1"),
            agent_pb2.WaitProcessResponse))
        await eventually(lambda: agent.waiting > 0)
        # A Check on the same shim connection (and the same forwarder connection) answers
        # while WaitProcess is still blocked.
        async with asyncio.timeout(2):
            await conn.call("grpc.Health", "Check", health_pb2.CheckRequest(),
                            health_pb2.HealthCheckResponse, timeout=5)
        assert not wait.done()
        agent.release_wait()
        response = await asyncio.wait_for(wait, 5)
        assert response.status == 7
    await shim.stop_vm("sb-wait")


async def test_agent_errors_come_back_intact(
    daemon: Daemon, cloud: FakeCloud, shim: Shim
) -> None:
    path = await shim.create_vm("sb-err")
    await shim.start_vm("sb-err")
    agent = cloud.agents["sb-err"]
    agent.errors["RemoveContainer"] = TTRPCError(Code.NOT_FOUND, "container c9 not found",
                                                 (b"\x0a\x03abc",))
    agent.errors["Check"] = TTRPCError(Code.UNAVAILABLE, "agent is busy")
    async with await Client.connect_unix(path) as conn:
        try:
            await conn.call_raw("grpc.AgentService", "RemoveContainer", b"\x0a\x02c9")
        except TTRPCError as exc:
            assert (exc.code, exc.message, exc.details) == (
                Code.NOT_FOUND, "container c9 not found", (b"\x0a\x03abc",))
        else:
            raise AssertionError("RemoveContainer should fail")
        try:
            await conn.call("grpc.Health", "Check", health_pb2.CheckRequest(),
                            health_pb2.HealthCheckResponse)
        except TTRPCError as exc:
            assert (exc.code, exc.message) == (Code.UNAVAILABLE, "agent is busy")
        else:
            raise AssertionError("Check should fail")
    await shim.stop_vm("sb-err")


async def test_create_container_gpu_annotation(
    daemon: Daemon, cloud: FakeCloud, shim: Shim
) -> None:
    path = await shim.create_vm("sb-gpu")
    await shim.start_vm("sb-gpu")
    agent = cloud.agents["sb-gpu"]
    request = agent_pb2.CreateContainerRequest(
        container_id="c1",
        storages=[agent_pb2.Storage(driver="image_guest_pull", source="busybox",
                                    mount_point="/run/kata-containers/c1/rootfs")],
        OCI=oci_pb2.Spec(Annotations={
            "io.katacontainers.config.hypervisor.default_gpus": "1"}),
    )
    plain = agent_pb2.CreateContainerRequest(container_id="c2", OCI=oci_pb2.Spec(
        Annotations={"a": "b"}))
    async with await Client.connect_unix(path) as conn:
        await conn.call_raw("grpc.AgentService", "CreateContainer", request.SerializeToString())
        await conn.call_raw("grpc.AgentService", "CreateContainer", plain.SerializeToString())
    got = agent_pb2.CreateContainerRequest()
    got.ParseFromString(agent.calls[-2].payload)
    assert got.OCI.Annotations["cdi.k8s.io/peer-pods"] == "nvidia.com/gpu=all"
    assert got.storages[0].driver == "image_guest_pull"
    # Without the GPU annotation the request goes through byte for byte.
    assert agent.calls[-1].payload == plain.SerializeToString()
    await shim.stop_vm("sb-gpu")


async def test_concurrent_start_makes_one_instance(
    daemon: Daemon, cloud: FakeCloud, shim: Shim
) -> None:
    cloud.provider.faults.create_delay = 0.2
    await shim.create_vm("sb-twice")
    assert await shim.create_vm("sb-twice") == await shim.create_vm("sb-twice")  # idempotent
    await asyncio.gather(shim.start_vm("sb-twice"), shim.start_vm("sb-twice"))
    await shim.start_vm("sb-twice")
    assert cloud.provider.create_calls == 1
    await shim.stop_vm("sb-twice")
    assert len(cloud.provider.instances) == 0


async def test_get_info_waits_for_the_sandbox(
    daemon: Daemon, cloud: FakeCloud, shim: Shim
) -> None:
    # Upstream: pkg/adaptor/cloud/cloud.go, cloudService.GetInstanceID waits (Wait=true) only
    # until a sandbox for the pod exists, then answers its instance id, "" before StartVM,
    # which pkg/adaptor/vminfo/service.go, GetInfo turns into NotFound at once.
    manager = daemon.manager
    assert manager is not None
    waiter = asyncio.create_task(shim.get_info("p1", "ns1", wait=True, timeout=10))
    await eventually(lambda: manager.info_waiters == 1)  # the call is waiting now
    await shim.create_vm("sb-info", shim_annotations(pod="p1", namespace="ns1"))
    try:
        await waiter
    except TTRPCError as exc:
        assert exc.code == Code.NOT_FOUND
        assert exc.message == "VM ID for ns1:p1 was not found"
    else:
        raise AssertionError("GetInfo should answer NotFound once the sandbox exists")
    for wait in (False, True):
        try:
            await shim.get_info("p1", "ns1", wait=wait, timeout=10)
        except TTRPCError as exc:
            assert exc.code == Code.NOT_FOUND
        else:
            raise AssertionError("GetInfo should fail before StartVM")
    try:
        await shim.get_info("p2", "ns1", wait=True, timeout=0.3)
    except TTRPCError as exc:
        assert exc.code == Code.DEADLINE_EXCEEDED
    else:
        raise AssertionError("GetInfo for a pod without a sandbox should time out")
    await shim.start_vm("sb-info")
    assert await shim.get_info("p1", "ns1", wait=True) == cloud.provider.created[0]
    await shim.stop_vm("sb-info")
