"""Ten pods at once: concurrent CreateVM and StartVM, each pod checked through its own agent
proxy and its own tunnel, then all stopped concurrently; nothing is left."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from tests.e2e.harness import (
    POD_GATEWAY,
    Adaptor,
    AgentSession,
    Shim,
    WorkerNode,
    vm_pod_netns,
    vm_residue,
    vxlan_id,
    worker_residue,
)
from tests.netns import echo

pytestmark = [pytest.mark.root, pytest.mark.netns]

PODS = 10


async def test_ten_pods_at_once(worker: WorkerNode, adaptor: Adaptor) -> None:
    pods = [worker.add_pod(n) for n in range(1, PODS + 1)]
    links_before = worker.links()
    await adaptor.start()
    shim = Shim(adaptor.socket)
    sids = [secrets.token_hex(32) for _ in pods]

    sockets = await asyncio.gather(*(shim.create_vm(sid, pod) for sid, pod in zip(
        sids, pods, strict=True)))
    assert len(set(sockets)) == PODS
    await asyncio.gather(*(shim.start_vm(sid) for sid in sids))
    instances = await asyncio.gather(*(shim.instance_id(pod) for pod in pods))
    assert all(instances) and len(set(instances)) == PODS

    sessions = [AgentSession(path) for path in sockets]
    try:
        statuses = await asyncio.gather(*(session.check() for session in sessions))
        assert statuses == ["SERVING"] * PODS
    finally:
        for session in sessions:
            await session.aclose()

    # Each pod has its own VXLAN id, the same at both ends, and its own traffic path.
    ids = [vxlan_id(pod.ns, "vxlan1") for pod in pods]
    assert len(set(ids)) == PODS
    for pod, instance_id, vni in zip(pods, instances, ids, strict=True):
        assert vxlan_id(vm_pod_netns(instance_id), "eth0") == vni
        peer = await asyncio.to_thread(echo, worker.ns, vm_pod_netns(instance_id), "tcp",
                                       pod.ip, 7000, f"hello {pod.name}")
        assert peer == POD_GATEWAY

    await asyncio.gather(*(shim.stop_vm(sid) for sid in sids))
    for pod, instance_id, sid in zip(pods, instances, sids, strict=True):
        assert vm_residue(worker, adaptor, pod, instance_id, sid) == []
    assert worker_residue(worker, adaptor, links_before) == []
    assert await adaptor.stop() == 0
