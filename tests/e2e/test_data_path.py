"""One pod through the whole data path, as the Kata shim drives it.

The real cloud-api-adaptor runs in a worker namespace with the local provider, mutual TLS
and a VXLAN tunnel; the pod VM runs process-user-data, the development agent and the real
agent-protocol-forwarder. Hypervisor calls use a new connection each, agent calls one
long-lived connection to the pod's socket, and a TCP connection from the worker to the pod
IP reaches a server inside the pod VM's pod namespace through the tunnel.
"""

from __future__ import annotations

import asyncio
import secrets

import pytest
from google.protobuf import empty_pb2

from protocols.apf import loads as load_apf
from protocols.kata import agent_pb2
from providers.local.layout import poll_until
from tests.e2e.harness import (
    POD_GATEWAY,
    POD_NAMESPACE,
    SHIM_NAMESPACES,
    WORKER_IP,
    Adaptor,
    AgentSession,
    Pod,
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


def assert_tunnel_carries_traffic(worker: WorkerNode, pod: Pod, neighbour: Pod,
                                  instance_id: str, port: int) -> None:
    """TCP and UDP from the worker and from an ordinary pod on the same node to the pod IP,
    served inside the pod VM's pod netns, and back the other way; each side sees the other's
    real address."""
    vm_pod = vm_pod_netns(instance_id)
    for proto in ("tcp", "udp"):
        seen = echo(worker.ns, vm_pod, proto, pod.ip, port, f"to-{pod.name}-{proto}")
        assert seen == POD_GATEWAY
        seen = echo(vm_pod, worker.ns, proto, POD_GATEWAY, port + 1, f"from-{pod.name}-{proto}")
        assert seen == pod.ip
    seen = echo(neighbour.ns, vm_pod, "tcp", pod.ip, port + 2, f"from {neighbour.name}")
    assert seen == neighbour.ip
    seen = echo(vm_pod, neighbour.ns, "tcp", neighbour.ip, port + 3, f"to {neighbour.name}")
    assert seen == pod.ip


async def test_one_pod_through_the_whole_data_path(
    worker: WorkerNode, adaptor: Adaptor
) -> None:
    pod = worker.add_pod(1)
    neighbour = worker.add_pod(2)  # an ordinary pod on the same node (no pod VM)
    links_before = worker.links()
    await adaptor.start()
    shim = Shim(adaptor.socket)
    sid = secrets.token_hex(32)

    socket_path = await shim.create_vm(sid, pod)
    assert socket_path == str(adaptor.pods_dir / sid / "agent.ttrpc")
    assert await shim.instance_id(pod) == ""  # no VM before StartVM
    await shim.start_vm(sid)
    instance_id = await shim.instance_id(pod)
    assert instance_id, "GetInfo names no instance after StartVM"

    # The VM got apf.json through its user-data: mutual TLS and this pod's network.
    apf = load_apf((adaptor.state_dir / instance_id / "run/peerpod/apf.json").read_text())
    assert apf.tls_server_cert and apf.tls_server_key and apf.tls_client_ca
    assert apf.pod_network is not None and apf.pod_network.tunnel_type == "vxlan"
    assert apf.pod_network.pod_ip == f"{pod.ip}/24"
    assert apf.pod_network.worker_node_ip == f"{WORKER_IP}/24"
    # The worker end of the tunnel sits in the pod netns, with the id the VM was given.
    assert vxlan_id(pod.ns, "vxlan1") == apf.pod_network.vxlan_id
    assert vxlan_id(vm_pod_netns(instance_id), "eth0") == apf.pod_network.vxlan_id

    agent = AgentSession(socket_path)
    try:
        assert await agent.check() == "SERVING"
        await agent.call(AGENT, "CreateSandbox", create_sandbox_request(sid, pod),
                         empty_pb2.Empty, 300)
        await agent.call(AGENT, "CreateContainer", create_container_request(sid, pod),
                         empty_pb2.Empty, 60)
        await agent.call(AGENT, "StartContainer", agent_pb2.StartContainerRequest(
            container_id=sid), empty_pb2.Empty)
        # WaitProcess blocks (no deadline, as the shim sends it) on the same connection...
        waiting = asyncio.ensure_future(agent.call(
            AGENT, "WaitProcess", agent_pb2.WaitProcessRequest(container_id=sid, exec_id=sid),
            agent_pb2.WaitProcessResponse, None))
        assert await poll_until(
            lambda: "WaitProcess" in [c["method"] for c in adaptor.agent_calls(instance_id)],
            10), adaptor.vm_log(instance_id)

        await asyncio.to_thread(assert_tunnel_carries_traffic, worker, pod, neighbour,
                                instance_id, 7000)

        # ... until the sandbox is destroyed (the shim's first step of a pod's end).
        await agent.call(AGENT, "DestroySandbox", agent_pb2.DestroySandboxRequest(),
                         empty_pb2.Empty)
        assert (await asyncio.wait_for(waiting, 10)).status == 137
    finally:
        await agent.aclose()
    assert agent.dials == 1  # one long-lived connection carried every call

    calls = adaptor.agent_calls(instance_id)
    assert [c["method"] for c in calls] == [
        "CreateSandbox", "CreateContainer", "StartContainer", "WaitProcess", "DestroySandbox"]
    sandbox, container = calls[0]["request"], calls[1]["request"]
    # The forwarder dropped the DNS entries and kept the rest.
    assert "dns" not in sandbox
    assert sandbox["hostname"] == pod.name and sandbox["sandbox_id"] == sid
    # The container joins the VM's pod network namespace, after the shim's namespaces.
    assert container["container_id"] == sid
    podns = f"/run/netns/{vm_pod_netns(instance_id).name}"
    assert container["OCI"]["Linux"]["Namespaces"] == [
        *SHIM_NAMESPACES, {"Type": "network", "Path": podns}]
    assert container["OCI"]["Annotations"]["io.kubernetes.cri.sandbox-name"] == pod.name

    # While the pod runs, the residue checks see every piece of it (so they can fail).
    running = " | ".join(vm_residue(worker, adaptor, pod, instance_id, sid))
    for piece in (f"network namespace ppvm-{instance_id}-pod", f"veth ppv{instance_id}",
                  "vxlan1 in", "ingress qdisc", "process", "provider directory", "sandbox.json"):
        assert piece in running
    running = " | ".join(worker_residue(worker, adaptor, links_before))
    assert f"ppv{instance_id}" in running and "iptables rule" in running

    await shim.stop_vm(sid)
    assert await shim.instance_id(pod) == ""
    assert vm_residue(worker, adaptor, pod, instance_id, sid) == []
    assert worker_residue(worker, adaptor, links_before) == []
    # The pod's own CNI wiring is untouched.
    assert f"inet {pod.ip}/24" in pod.ns.ip("addr", "show", "eth0")
    # StopVM again (the shim may retry) is fine and changes nothing.
    await shim.stop_vm(sid)
    assert await adaptor.stop() == 0
    assert "Traceback" not in adaptor.log(), adaptor.log_tail()
    # Upstream's CreateVM log line, which tooling parses.
    assert (f"create a sandbox {sid} for pod {pod.name} in namespace {POD_NAMESPACE} "
            f"(netns: {pod.ns.path})") in adaptor.log()
