"""The sandbox record: typed values, version 2 written, version 1 (the previous release's)
still read, by the record class and by a daemon taking over a running pod from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adaptor.record import RECORD_VERSION, SandboxRecord
from adaptor.server import Daemon
from adaptor.states import Holdings, SandboxState
from adaptor.store import SandboxStore
from protocols import apf
from protocols.ttrpc import Client
from providers.base import InstanceSpec
from tests.adaptor.conftest import FAST_RETRY, make_settings
from tests.adaptor.shim import Shim
from tests.fakes.cloud import FakeCloud
from tests.fakes.network import FakeWorkerNetwork

# A record exactly as the previous release (record version 1) writes it.
V1_RECORD = r"""{
 "apf_json": "{\n    \"pod-network\": {\n        \"podip\": \"10.244.1.5/24\",\n        \"pod-hw-addr\": \"0a:58:0a:f4:01:05\",\n        \"interface\": \"eth0\",\n        \"worker-node-ip\": \"192.0.2.10/24\",\n        \"tunnel-type\": \"vxlan\",\n        \"routes\": [\n            {\n                \"dst\": \"\",\n                \"gw\": \"10.244.1.1\",\n                \"dev\": \"eth0\"\n            }\n        ],\n        \"neighbors\": null,\n        \"mtu\": 1450,\n        \"index\": 0,\n        \"vxlan-port\": 4789,\n        \"vxlan-id\": 555001,\n        \"dedicated\": false,\n        \"external-net-via-pod-vm\": false\n    },\n    \"pod-namespace\": \"default\",\n    \"pod-name\": \"web\",\n    \"tls-server-key\": \"KEY\",\n    \"tls-server-cert\": \"CERT\",\n    \"tls-client-ca\": \"CA\"\n}",
 "extra": {},
 "fingerprint": "f00d",
 "instance_id": "i-0abc",
 "instance_ips": [
  "127.0.0.2"
 ],
 "instance_name": "podvm-web-sb-v1",
 "netns_path": "/run/netns/cni-1",
 "pod_name": "web",
 "pod_namespace": "default",
 "sandbox_id": "sb-v1",
 "server_name": "podvm-web-sb-v1",
 "socket_path": "/run/peerpod/pods/sb-v1/agent.ttrpc",
 "spec": {
  "gpu_model": "",
  "gpus": 0,
  "image": null,
  "instance_type": "t3.small",
  "memory_mib": 4096,
  "multi_nic": false,
  "vcpus": 2,
  "volumes": []
 },
 "state": "running",
 "user_data": "#cloud-config\n",
 "version": 1
}"""  # noqa: E501

NETWORK = apf.PodNetwork(
    tunnel_type="vxlan", pod_ip="10.244.1.5/24", pod_hw_addr="0a:58:0a:f4:01:05",
    interface="eth0", worker_node_ip="192.0.2.10/24",
    routes=(apf.Route(dst="", gw="10.244.1.1", dev="eth0"),), mtu=1450, vxlan_port=4789,
    vxlan_id=555001,
)


def test_version_1_loads_as_typed_values() -> None:
    record = SandboxRecord.from_json(V1_RECORD)
    assert record.pod_network == NETWORK and record.vxlan_id == 555001
    assert record.state is SandboxState.RUNNING and record.instance_id == "i-0abc"
    assert record.instance_ips == ("127.0.0.2",)
    assert record.spec == InstanceSpec(instance_type="t3.small", vcpus=2, memory_mib=4096)
    assert record.attempt == 0 and record.server_name == "podvm-web-sb-v1"
    # A running v1 pod has its tunnel: a stop must tear it down.
    assert record.machine_state().holds == Holdings(instance=True, tunnel=True)
    # Written back as version 2: no apf.json text, the pod network as an object.
    data = json.loads(record.to_json())
    assert data["version"] == RECORD_VERSION == 2 and "apf_json" not in data
    assert data["pod_network"]["vxlan-id"] == 555001
    assert SandboxRecord.from_json(record.to_json()) == record


@pytest.mark.parametrize(("state", "tunnel"), [
    ("created", False), ("starting", True), ("stop-failed", True),
])
def test_version_1_states_keep_what_may_exist(state: str, tunnel: bool) -> None:
    data = json.loads(V1_RECORD)
    data["state"] = state
    if state == "created":
        data.update(instance_id="", instance_ips=[])
    holds = SandboxRecord.from_dict(data).machine_state().holds
    assert holds.tunnel is tunnel and holds.instance is (state != "created")


def test_version_2_round_trips() -> None:
    record = SandboxRecord.from_json(V1_RECORD).replace(
        state=SandboxState.STOP_FAILED, instance_id="", instance_ips=(), tunnel=True,
        attempt=3,
    )
    again = SandboxRecord.from_json(record.to_json())
    assert again == record and again.machine_state().holds == Holdings(tunnel=True)


def test_records_that_cannot_be_read_are_refused() -> None:
    with pytest.raises(ValueError, match="unsupported sandbox record version"):
        SandboxRecord.from_dict({"version": 99})
    data = json.loads(V1_RECORD)
    data["state"] = "stopping"
    with pytest.raises(ValueError, match="state 'stopping'"):
        SandboxRecord.from_dict(data)


async def test_a_daemon_takes_a_running_pod_over_from_a_version_1_record(
    short_dir: str, cloud: FakeCloud, network: FakeWorkerNetwork
) -> None:
    """A rolling update from the previous release: its v1 record of a running pod is served
    again (same VM, same VXLAN id), then stopped cleanly."""
    settings = make_settings(short_dir, cloud.port)
    shim = Shim(settings.socket)
    async with Daemon(settings, cloud.provider, network=network, delete_retry=FAST_RETRY):
        path = await shim.create_vm("sb-v1")
        await shim.start_vm("sb-v1")
    live = SandboxStore(settings.pods_dir).load("sb-v1")
    assert live is not None and live.pod_network is not None
    # What the previous release wrote for this very pod: the literal v1 record, with the
    # live pod's values (its VM, its socket, its TLS material) in place of the examples.
    apf_text = Path(settings.pods_dir, "sb-v1", "apf.json").read_text()  # noqa: ASYNC240
    v1 = json.loads(V1_RECORD)
    v1.update(apf_json=apf_text, instance_id=live.instance_id,
              instance_ips=list(live.instance_ips), instance_name=live.instance_name,
              socket_path=path, server_name=live.server_name, user_data=live.user_data,
              netns_path=live.netns_path, fingerprint=live.fingerprint,
              pod_name=live.pod_name, pod_namespace=live.pod_namespace)
    Path(settings.pods_dir, "sb-v1", "sandbox.json").write_text(json.dumps(v1))  # noqa: ASYNC240
    network.allocator.release("sb-v1")  # a new process: nothing allocated yet

    async with Daemon(settings, cloud.provider, network=network, delete_retry=FAST_RETRY) as d:
        assert d.restored is not None and d.restored.resumed == 1
        assert network.allocated == {"sb-v1": live.vxlan_id}
        async with await Client.connect_unix(path) as conn:
            await conn.call_raw("grpc.Health", "Check", b"", timeout=10)
        network.calls.clear()
        await shim.stop_vm("sb-v1")
        assert ("teardown", "sb-v1") in network.calls
        assert cloud.provider.instances == {} and cloud.provider.create_calls == 1
        assert "sb-v1" not in network.allocated
