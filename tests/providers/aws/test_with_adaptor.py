"""The whole adaptor (``cloud-api-adaptor aws``) against moto_server, 20 pods at once.

Everything that speaks TCP runs in a network namespace the test creates
(:mod:`tests.providers.aws.nsworld`): moto_server, the adaptor, and the stand-in pod VMs
(:mod:`tests.providers.aws.fleet`), which serve a mutual-TLS test forwarder on each instance's
private IP as soon as moto lists the instance. The test drives the adaptor as the Kata shim
does, through unix sockets: a new connection per hypervisor call, and one long-lived
connection per sandbox to its agent socket, relayed by the adaptor to the forwarder and on
to a test agent that records what arrives.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from protocols.kata import agent_pb2, health_pb2
from protocols.ttrpc import Client
from providers.base import NODE_TAG, POD_NAME_TAG, POD_NAMESPACE_TAG, SANDBOX_TAG
from tests.adaptor.helpers import eventually
from tests.adaptor.shim import Shim, shim_annotations
from tests.fakes import leakcheck
from tests.fakes.agent import TestAgent
from tests.providers.aws.fleet import agent_socket
from tests.providers.aws.nsworld import (
    ACCESS_KEY_ID,
    SECRET_ACCESS_KEY,
    AwsAdaptorWorld,
    aws_adaptor_world,
)

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.timeout(120)]

PODS = 20
NAMESPACE = "aws-e2e"
leakcheck.add_secret(SECRET_ACCESS_KEY)
leakcheck.add_secret(ACCESS_KEY_ID)


@pytest.fixture
async def aws_world(request: pytest.FixtureRequest) -> AsyncIterator[AwsAdaptorWorld]:
    """moto_server, the stand-in VMs and ``cloud-api-adaptor aws`` in a fresh namespace;
    the adaptor runs at the log level the test names (``@pytest.mark.parametrize(...,
    indirect=True)``, default ``info``). Its log is scanned for secrets after a SIGTERM stop."""
    log_level = getattr(request, "param", "info")
    async with aws_adaptor_world(f"node-{uuid.uuid4().hex[:8]}") as world:
        await world.start_adaptor({"LOG_LEVEL": log_level})
        try:
            yield world
        finally:
            status = world.stop_adaptor()
            assert status == 0, f"adaptor exit status {status}: {world.adaptor_log()[-2000:]}"
            if log_level == "info":
                leaks = leakcheck.scan_log_file(world.adaptor_log_path, "cloud-api-adaptor aws")
                assert not leaks, leaks


@dataclass
class PodResult:
    sandbox_id: str
    pod: str
    socket_path: str
    instance_id: str
    agent: TestAgent


def _create_sandbox(sid: str, n: int) -> bytes:
    return agent_pb2.CreateSandboxRequest(
        hostname=f"pod-{n}", sandbox_id=sid, guest_hook_path="/usr/share/oci/hooks",
    ).SerializeToString()


def _create_container(sid: str) -> bytes:
    return agent_pb2.CreateContainerRequest(
        container_id=sid[:12],
        exec_id=sid[:12],
        storages=[agent_pb2.Storage(driver="image_guest_pull", source="quay.io/prometheus/busybox",
                                    mount_point=f"/run/kata-containers/{sid[:12]}/rootfs")],
    ).SerializeToString()


async def _one_pod(
    world: AwsAdaptorWorld, shim: Shim, n: int, agents: list[TestAgent]
) -> PodResult:
    sid = secrets.token_hex(32)  # the shim's sandbox ids are 64 hex digits
    pod = f"pod-{n}"
    agent = TestAgent(agent_socket(world.agents_dir, sid))
    agents.append(agent)
    await agent.start()
    socket_path = await shim.create_vm(
        sid, shim_annotations(pod=pod, namespace=NAMESPACE),
        netns=f"/var/run/netns/cni-{sid[:8]}",  # absent: TUNNEL_TYPE=none reads nothing
    )
    assert socket_path == os.path.join(world.pods_dir, sid, "agent.ttrpc")
    await shim.start_vm(sid, timeout=60)
    instance_id = await shim.get_info(pod, NAMESPACE)
    assert instance_id.startswith("i-"), instance_id

    # One long-lived agent connection for the whole sandbox, as the shim keeps.
    async with await Client.connect_unix(socket_path) as conn:
        health = await conn.call("grpc.Health", "Check", health_pb2.CheckRequest(),
                                 health_pb2.HealthCheckResponse, timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        create_sandbox = _create_sandbox(sid, n)
        await conn.call_raw("grpc.AgentService", "CreateSandbox", create_sandbox, timeout=10,
                            metadata=(("pod", pod),))
        create_container = _create_container(sid)
        await conn.call_raw("grpc.AgentService", "CreateContainer", create_container,
                            timeout=10)
    # What the agent behind this sandbox's VM received: exactly these calls, bytes untouched
    # (so the adaptor dialled this sandbox's instance and no other).
    assert agent.health_checks == 1
    assert [(c.method, c.payload) for c in agent.calls] == [
        ("CreateSandbox", create_sandbox), ("CreateContainer", create_container)]
    assert ("pod", pod) in agent.calls[0].metadata
    assert 0 < agent.calls[0].timeout_nano <= 10e9

    await shim.stop_vm(sid)
    assert not Path(socket_path).exists()  # noqa: ASYNC240
    await shim.stop_vm(sid)  # a second StopVM is fine
    return PodResult(sid, pod, socket_path, instance_id, agent)


def _left_in(pod_dir: str) -> list[str]:
    return sorted(os.listdir(pod_dir)) if os.path.isdir(pod_dir) else []


async def test_twenty_pods_through_the_adaptor_on_moto(aws_world: AwsAdaptorWorld) -> None:
    world = aws_world
    shim = Shim(world.socket)
    assert await shim.version() == "0.0.0"
    agents: list[TestAgent] = []
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(_one_pod(world, shim, n, agents)) for n in range(PODS)]
    finally:
        for agent in agents:
            await agent.aclose()
    results = [task.result() for task in tasks]

    # One instance per pod, every one of them terminated by StopVM, none left running.
    instances = await world.ec2.instances(world.node)
    by_id = {i["InstanceId"]: i for i in instances}
    assert sorted(by_id) == sorted(r.instance_id for r in results)
    states = {i["InstanceId"]: i["State"]["Name"] for i in instances}
    assert set(states.values()) == {"terminated"}, states
    for result in results:
        tags = {t["Key"]: t["Value"] for t in by_id[result.instance_id]["Tags"]}
        assert tags[NODE_TAG] == world.node
        assert tags[SANDBOX_TAG] == result.sandbox_id
        assert (tags[POD_NAME_TAG], tags[POD_NAMESPACE_TAG]) == (result.pod, NAMESPACE)
        assert tags["Name"] == f"podvm-{result.pod}-{result.sandbox_id[:8]}"

    # The stand-in VMs: one mTLS forwarder per instance, on the instance's private IP (never
    # dialled from the machine's namespace), and each one retired once moto terminated it.
    started = {e["instance"]: e for e in world.events("started")}
    assert not world.events("failed"), world.events("failed")
    assert set(started) == set(by_id)
    for instance_id, event in started.items():
        assert event["tls"] is True
        assert event["ip"] == by_id[instance_id]["PrivateIpAddress"]
        assert ipaddress.ip_address(event["ip"]).is_private
        assert event["sandbox"] == {r.instance_id: r.sandbox_id for r in results}[instance_id]
        assert event["namespace"] == NAMESPACE
    assert len({e["ip"] for e in started.values()}) == PODS
    await eventually(lambda: {e["instance"] for e in world.events("stopped")} == set(by_id),
                      timeout=10)

    # Nothing of a sandbox (agent socket, apf.json copy with the VM's TLS key, record,
    # start lock, directory) outlives its StopVM.
    for result in results:
        left = _left_in(os.path.join(world.pods_dir, result.sandbox_id))
        assert left == [], (result.sandbox_id, left)
    assert sorted(_left_in(world.pods_dir)) == []
    assert await shim.version() == "0.0.0"


@pytest.mark.parametrize("aws_world", ["debug"], indirect=True)
async def test_debug_log_keeps_credentials_and_user_data_out(
    aws_world: AwsAdaptorWorld,
) -> None:
    world = aws_world
    shim = Shim(world.socket)
    agents: list[TestAgent] = []
    try:
        result = await _one_pod(world, shim, 0, agents)
    finally:
        for agent in agents:
            await agent.aclose()
    attribute = await world.ec2.call("describe_instance_attribute",
                                     InstanceId=result.instance_id, Attribute="userData")
    user_data_b64 = attribute["UserData"]["Value"]
    assert len(user_data_b64) > 1000  # apf.json with certificate and key
    log = world.adaptor_log()
    assert "[adaptor" in log and " DEBUG " in log  # debug lines were written
    assert user_data_b64 not in log
    assert ACCESS_KEY_ID not in log
    assert SECRET_ACCESS_KEY not in log
