"""EXTERNAL_NETWORK_VIA_PODVM and POD_SUBNET_CIDRS through the real adaptor, the local
provider's pod VM (with its second NIC) and the real forwarder.

Upstream: cloud-api-adaptor's pkg/adaptor/cloud/cloud.go CreateVM sets
``InstanceTypeSpec.MultiNic`` from EXTERNAL_NETWORK_VIA_PODVM; podnetwork/workernode.go
``workerNode.Inspect`` puts the flag and the POD_SUBNET_CIDRS routes into apf.json;
podnetwork/podnode.go ``podNode.Setup`` adds the routes and calls ``setupExternalNetwork``
(podnetwork/common.go), which moves the VM's second NIC into the pod netns and makes it the
pod's default route.
"""

from __future__ import annotations

import json
import secrets

import pytest

from protocols.apf import Route
from protocols.apf import loads as load_apf
from tests.e2e.harness import (
    POD_GATEWAY,
    Adaptor,
    Shim,
    WorkerNode,
    vm_pod_netns,
    vm_residue,
    worker_residue,
)
from tests.netns import Netns, echo

pytestmark = [pytest.mark.root, pytest.mark.netns]

SERVICE_IP = "10.96.0.10"  # in POD_SUBNET_CIDRS: stays on the tunnel
INTERNET_IP = "198.51.100.7"  # anything else: leaves through the VM's second NIC


async def test_pod_egress_through_the_vm_and_service_subnet_through_the_tunnel(
    worker: WorkerNode, adaptor: Adaptor
) -> None:
    for address in (SERVICE_IP, INTERNET_IP):
        worker.ns.ip("addr", "add", f"{address}/32", "dev", "lo")
    pod = worker.add_pod(1)
    links_before = worker.links()
    adaptor.env.update({"EXTERNAL_NETWORK_VIA_PODVM": "true",
                        "POD_SUBNET_CIDRS": "10.96.0.0/12"})
    await adaptor.start()
    shim = Shim(adaptor.socket)
    sid = secrets.token_hex(32)
    await shim.create_vm(sid, pod)
    await shim.start_vm(sid)
    instance_id = await shim.instance_id(pod)
    apf = load_apf((adaptor.state_dir / instance_id / "run/peerpod/apf.json").read_text())
    assert apf.pod_network is not None and apf.pod_network.external_net_via_pod_vm is True
    assert Route(dst="10.96.0.0/12", gw=POD_GATEWAY, dev="eth0") in apf.pod_network.routes

    record = json.loads((adaptor.state_dir / instance_id / "instance.json").read_text())
    second = record["second_address"]
    vm_pod = vm_pod_netns(instance_id)
    vm = Netns(f"ppvm-{instance_id}")
    try:
        assert f"inet {second}/24" in vm_pod.ip("addr", "show", "eth1")
        assert "eth1" not in vm.ip("link", "show")
        for proto, port in (("tcp", 7700), ("udp", 7710)):
            # egress leaves through the VM's second NIC with its address
            assert echo(vm_pod, worker.ns, proto, INTERNET_IP, port, "out") == second
            # the service subnet and the pod subnet take the tunnel
            assert echo(vm_pod, worker.ns, proto, SERVICE_IP, port + 1, "svc") == pod.ip
            assert echo(vm_pod, worker.ns, proto, POD_GATEWAY, port + 2, "gw") == pod.ip
            # and the worker reaches the pod through the tunnel
            assert echo(worker.ns, vm_pod, proto, pod.ip, port + 3, "in") == POD_GATEWAY
    except AssertionError:
        print(adaptor.vm_log(instance_id))
        raise
    assert "external network through eth1" in adaptor.vm_log(instance_id)

    await shim.stop_vm(sid)
    assert vm_residue(worker, adaptor, pod, instance_id, sid) == []
    assert worker_residue(worker, adaptor, links_before) == []
    assert not any(name.startswith("ppx") for name in worker.links())  # the second veth
    assert await adaptor.stop() == 0
    assert "Traceback" not in adaptor.log(), adaptor.log_tail()
