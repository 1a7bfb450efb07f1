"""The adaptor is killed (SIGKILL) with pods running and started again on the same dirs: the
pods keep working through their proxies and tunnels, a new pod gets a VXLAN id of its own,
and StopVM still cleans everything up."""

from __future__ import annotations

import asyncio
import json
import os
import secrets

import pytest
from google.protobuf import empty_pb2

from providers.local.layout import poll_until
from tests.e2e.harness import (
    POD_GATEWAY,
    Adaptor,
    AgentSession,
    Shim,
    WorkerNode,
    create_container_request,
    create_sandbox_request,
    vm_pod_netns,
    vm_residue,
    vxlan_id,
    worker_residue,
)
from tests.netns import echo

pytestmark = [pytest.mark.root, pytest.mark.netns]

AGENT = "grpc.AgentService"


def vm_leader_alive(adaptor: Adaptor, instance_id: str) -> bool:
    """Whether the pod VM's supervisor (its process group leader) still runs."""
    record = (adaptor.state_dir / instance_id / "instance.json").read_text()
    pid = int(json.loads(record)["pid"])
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_pods_survive_an_adaptor_restart(worker: WorkerNode, adaptor: Adaptor) -> None:
    pods = [worker.add_pod(n) for n in (1, 2, 3)]
    links_before = worker.links()
    await adaptor.start()
    shim = Shim(adaptor.socket)
    sids = [secrets.token_hex(32) for _ in pods]

    # Two pods run before the restart; the third is created after it.
    running = list(zip(pods[:2], sids[:2], strict=True))
    sessions: dict[str, AgentSession] = {}
    instances: dict[str, str] = {}
    try:
        for pod, sid in running:
            sessions[sid] = AgentSession(await shim.create_vm(sid, pod))
            await shim.start_vm(sid)
            instances[sid] = await shim.instance_id(pod)
            assert await sessions[sid].check() == "SERVING"
            await sessions[sid].call(AGENT, "CreateSandbox", create_sandbox_request(sid, pod),
                                     empty_pb2.Empty, 300)
        ids_before = {sid: vxlan_id(pod.ns, "vxlan1") for pod, sid in running}

        adaptor.kill()
        # The pod VMs run on; the shim's agent connections broke with the adaptor.
        assert all(vm_leader_alive(adaptor, instances[sid]) for _, sid in running)
        assert await poll_until(lambda: not any(s.connected for s in sessions.values()), 5)

        await adaptor.start()
        for pod, sid in running:
            session = sessions[sid]
            dials = session.dials
            assert await session.check() == "SERVING"  # re-dials the same socket path
            assert session.dials == dials + 1
            await session.call(AGENT, "CreateContainer", create_container_request(sid, pod),
                               empty_pb2.Empty, 60)
            calls = [c["method"] for c in adaptor.agent_calls(instances[sid])]
            assert calls == ["CreateSandbox", "CreateContainer"]
            assert await shim.instance_id(pod) == instances[sid]
            assert vxlan_id(pod.ns, "vxlan1") == ids_before[sid]
            peer = await asyncio.to_thread(echo, worker.ns, vm_pod_netns(instances[sid]),
                                           "tcp", pod.ip, 7000, f"after restart {pod.name}")
            assert peer == POD_GATEWAY

        # A pod created after the restart does not reuse a VXLAN id still in use.
        new_pod, new_sid = pods[2], sids[2]
        sessions[new_sid] = AgentSession(await shim.create_vm(new_sid, new_pod))
        await shim.start_vm(new_sid)
        instances[new_sid] = await shim.instance_id(new_pod)
        assert await sessions[new_sid].check() == "SERVING"
        assert vxlan_id(new_pod.ns, "vxlan1") not in ids_before.values()
        peer = await asyncio.to_thread(echo, worker.ns, vm_pod_netns(instances[new_sid]),
                                       "tcp", new_pod.ip, 7000, "new pod")
        assert peer == POD_GATEWAY
    finally:
        for session in sessions.values():
            await session.aclose()

    await asyncio.gather(*(shim.stop_vm(sid) for sid in sids))
    for pod, sid in zip(pods, sids, strict=True):
        assert vm_residue(worker, adaptor, pod, instances[sid], sid) == []
    assert worker_residue(worker, adaptor, links_before) == []
    assert await adaptor.stop() == 0
