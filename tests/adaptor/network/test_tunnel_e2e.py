"""The whole tunnel: worker side and pod VM side built from apf.json alone, real traffic."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from adaptor.network import make_worker_network
from forwarder.podnetwork import PodNetworkHandle, setup_pod_network
from protocols.apf import ApfConfig, PodNetwork, dumps, loads
from tests.netns import (
    POD_GATEWAY,
    NetnsPool,
    PodSlot,
    WorkerTopology,
    build_worker_topology,
    echo,
)

pytestmark = [pytest.mark.root, pytest.mark.netns]


def via_apf_json(network: PodNetwork, pod_name: str) -> PodNetwork:
    """What the pod VM sees: the network after a dumps/loads round trip of apf.json."""
    text = dumps(ApfConfig(pod_network=network, pod_namespace="default", pod_name=pod_name))
    parsed = loads(text).pod_network
    assert parsed is not None
    return parsed


def assert_traffic(topo: WorkerTopology, slot: PodSlot, port: int) -> None:
    for proto in ("tcp", "udp"):
        # worker side (the pod gateway on cni0) -> the pod's IP, served in the VM's podns
        seen = echo(topo.worker, slot.vm_podns, proto, slot.pod_ip, port, f"to-pod-{proto}")
        assert seen == POD_GATEWAY
        # the pod in the VM -> the worker side, which sees the pod's own IP as the source
        seen = echo(slot.vm_podns, topo.worker, proto, POD_GATEWAY, port + 1, f"from-{proto}")
        assert seen == slot.pod_ip


def tunnel_residue(topo: WorkerTopology, slot: PodSlot, vxlan_id: int) -> list[str]:
    """Everything of this pod's tunnel still present on either side (empty when clean)."""
    found = []
    tag = f"peerpod [vni:{vxlan_id}]"
    if "vxlan" in slot.pod.ip("-d", "link", "show"):
        found.append("vxlan device in the worker-side pod netns")
    if slot.pod.run(["tc", "filter", "show", "dev", "eth0", "ingress"]).strip():
        found.append("tc filter on the pod's eth0")
    if "ingress" in slot.pod.run(["tc", "qdisc", "show", "dev", "eth0"]):
        found.append("ingress qdisc on the pod's eth0")
    if "vxlan" in topo.worker.ip("-d", "link", "show"):
        found.append("vxlan device in the worker namespace")
    if tag in topo.worker.run(["iptables", "-t", "raw", "-S"]):
        found.append("iptables rule in the worker namespace")
    if "vxlan" in slot.vm.ip("-d", "link", "show"):
        found.append("vxlan device in the VM namespace")
    if tag in slot.vm.run(["iptables", "-t", "raw", "-S"]):
        found.append("iptables rule in the VM namespace")
    if slot.vm_podns.exists() and "vxlan" in slot.vm_podns.ip("-d", "link", "show"):
        found.append("vxlan device in the VM's pod netns")
    return found


async def test_two_pods_through_the_tunnel(netns_pool: NetnsPool) -> None:
    topo = build_worker_topology(netns_pool, pods=2)
    wn = make_worker_network("vxlan", host_netns=topo.worker.path)
    handles: dict[int, PodNetworkHandle] = {}
    networks: dict[int, PodNetwork] = {}
    for slot in topo.pods:
        sid = f"sandbox-{slot.number}"
        network = await wn.inspect(sid, slot.pod.path)
        networks[slot.number] = network
        await wn.setup(sid, slot.pod.path, network, [IPv4Address(slot.vm_ip)])
        handles[slot.number] = await setup_pod_network(
            via_apf_json(network, f"pod{slot.number}"),
            pod_netns=slot.vm_podns.path,
            vm_netns=slot.vm.path,
            wait_timeout=5,
        )
    assert {networks[1].vxlan_id, networks[2].vxlan_id} == {555000, 555001}
    pod1, pod2 = topo.pods

    # the worker end: vxlan1 in the pod netns, remote = VM, with the right id and port
    details = pod1.pod.ip("-d", "link", "show", "vxlan1")
    assert f"vxlan id {networks[1].vxlan_id} remote {pod1.vm_ip} " in details
    assert "dstport 4789" in details
    # the VM end: the pod's interface name, MAC and IP on a vxlan towards the worker
    details = pod1.vm_podns.ip("-d", "addr", "show", "eth0")
    assert f"vxlan id {networks[1].vxlan_id} remote 192.0.2.1 " in details
    assert networks[1].pod_hw_addr in details and f"inet {pod1.pod_ip}/24" in details
    assert "mtu 1450" in details  # min(pod MTU 1500, 1450)
    routes = pod1.vm_podns.ip("route", "show")
    assert f"default via {POD_GATEWAY} dev eth0" in routes
    assert "10.244.1.0/24 dev eth0 proto kernel scope link" in routes

    for slot in topo.pods:
        assert_traffic(topo, slot, 7000 + 10 * slot.number)

    # tearing pod 1 down (both ends) removes exactly its pieces; pod 2 keeps working
    await handles[1].teardown()
    await wn.teardown("sandbox-1", pod1.pod.path, networks[1])
    wn.release("sandbox-1")
    assert tunnel_residue(topo, pod1, networks[1].vxlan_id) == []
    rules = topo.worker.run(["iptables", "-t", "raw", "-S"])
    assert f"peerpod [vni:{networks[2].vxlan_id}]" in rules
    assert_traffic(topo, pod2, 7100)
    # repeating teardown is fine
    await handles[1].teardown()
    await wn.teardown("sandbox-1", pod1.pod.path, networks[1])

    await handles[2].teardown()
    await wn.teardown("sandbox-2", pod2.pod.path, networks[2])
    assert tunnel_residue(topo, pod2, networks[2].vxlan_id) == []
    for ns in (topo.worker, pod1.vm, pod2.vm):
        assert "peerpod" not in ns.run(["iptables", "-t", "raw", "-S"])
    # the pods' own CNI wiring is untouched
    assert f"inet {pod1.pod_ip}/24" in pod1.pod.ip("addr", "show", "eth0")
