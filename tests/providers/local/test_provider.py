"""The local provider end to end: real processes, real forwarder with mTLS, real namespaces."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any, cast

import pytest
from google.protobuf import empty_pb2

from adaptor.tls import AgentTLS
from protocols import apf
from protocols.kata import agent_pb2, health_pb2, oci_pb2
from providers.base import NODE_TAG, SANDBOX_TAG, ConfigError, Instance, ProviderError
from providers.local import layout
from providers.local.provider import LocalProvider
from providers.local.settings import LocalSettings
from tests.providers.local.conftest import (
    NODE,
    LocalSetup,
    dial_forwarder,
    group_alive,
    request,
    vm_log,
)


def _netns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split(" ", 1)[0] for line in out.stdout.splitlines()}


def _netns_pids(name: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True,
                         check=True)
    return [int(word) for word in out.stdout.split()]


def _entries(path: Path) -> list[Path]:
    return list(path.iterdir())


def _link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", "dev", name], capture_output=True,
                          check=False).returncode == 0


async def _exercise_vm(setup: LocalSetup, agent_tls: AgentTLS, network: apf.PodNetwork | None
                       ) -> tuple[Instance, int]:
    """Create a VM, talk to its agent through the forwarder; return it and its pgid."""
    provider, settings = setup.provider, setup.settings
    req = request(agent_tls, network)
    instance = await provider.create_instance(req)
    state = Path(settings.state_dir)
    assert layout.ID_PATTERN.fullmatch(instance.id)
    assert instance.name == req.name
    assert instance.created_at is not None and instance.created_at.tzinfo is not None
    record = json.loads((state / instance.id / "instance.json").read_text())
    assert (state / instance.id / "cidata" / "user-data").read_bytes() == req.user_data
    pgid = record["pid"]
    assert group_alive(pgid)

    host = str(instance.ips[0])
    try:
        client = await dial_forwarder(host, settings.forwarder_port, agent_tls, req.name)
    except AssertionError:
        print(vm_log(state, instance.id))
        raise
    async with client:
        version = await client.call("grpc.Health", "Version", health_pb2.CheckRequest(),
                                    health_pb2.VersionCheckResponse, timeout=10)
        assert "development stand-in" in version.agent_version
        await client.call("grpc.AgentService", "CreateSandbox",
                          agent_pb2.CreateSandboxRequest(sandbox_id=req.sandbox_id,
                                                         hostname="nginx", dns=["10.0.0.10"]),
                          empty_pb2.Empty, timeout=10)
        spec = oci_pb2.Spec(Version="1.1.0", Linux=oci_pb2.Linux())
        await client.call("grpc.AgentService", "CreateContainer",
                          agent_pb2.CreateContainerRequest(container_id="c1", OCI=spec),
                          empty_pb2.Empty, timeout=10)

    # process-user-data provisioned the VM's files; the forwarder relayed to the dev agent.
    assert (state / instance.id / "run" / "peerpod" / "apf.json").exists()
    assert (state / instance.id / "run" / "peerpod" / "initdata.digest").exists()
    calls = [json.loads(line) for line in
             (state / instance.id / "agent-calls.jsonl").read_text().splitlines()]
    by_method = {call["method"]: call["request"] for call in calls}
    assert by_method["CreateSandbox"]["sandbox_id"] == req.sandbox_id
    assert "dns" not in by_method["CreateSandbox"]  # the forwarder's interceptor dropped it
    namespaces = by_method["CreateContainer"]["OCI"]["Linux"]["Namespaces"]
    assert {"Type": "network", "Path": f"/run/netns/{layout.pod_netns(instance.id)}"} \
        in namespaces

    listed = await provider.list_instances({NODE_TAG: NODE, SANDBOX_TAG: req.sandbox_id})
    assert [(i.id, i.ips, i.state) for i in listed] == [(instance.id, instance.ips, "running")]
    assert await provider.list_instances({SANDBOX_TAG: "other"}) == []
    return instance, pgid


async def _delete_and_check(setup: LocalSetup, instance: Instance, pgid: int) -> None:
    provider = setup.provider
    await provider.delete_instance(instance.id)
    assert not group_alive(pgid)
    assert not (Path(setup.settings.state_dir) / instance.id).exists()
    assert await provider.list_instances({SANDBOX_TAG: instance.tags[SANDBOX_TAG]}) == []
    await provider.delete_instance(instance.id)  # twice is fine


@pytest.mark.root
@pytest.mark.netns
async def test_netns_vm_lifecycle(netns_provider: LocalSetup, agent_tls: AgentTLS) -> None:
    await netns_provider.provider.verify_config()
    assert netns_provider.provider.uses_netns
    instance, pgid = await _exercise_vm(netns_provider, agent_tls,
                                        apf.PodNetwork(tunnel_type="none"))
    subnet = IPv4Network(netns_provider.settings.subnet)
    assert instance.ips[0] in subnet and instance.ips[0] != next(subnet.hosts())
    names = _netns_names()
    assert {layout.vm_netns(instance.id), layout.pod_netns(instance.id)} <= names
    assert _link_exists(layout.host_veth(instance.id))
    assert pgid in _netns_pids(layout.vm_netns(instance.id))

    await _delete_and_check(netns_provider, instance, pgid)
    names = _netns_names()
    assert layout.vm_netns(instance.id) not in names
    assert layout.pod_netns(instance.id) not in names
    assert not _link_exists(layout.host_veth(instance.id))


@pytest.mark.root
@pytest.mark.netns
async def test_netns_two_vms_get_distinct_addresses(
    netns_provider: LocalSetup, agent_tls: AgentTLS
) -> None:
    provider = netns_provider.provider
    first = await provider.create_instance(request(agent_tls))
    second = await provider.create_instance(request(agent_tls))
    assert first.ips != second.ips
    assert len(await provider.list_instances({NODE_TAG: NODE})) == 2
    await provider.delete_instance(first.id)
    third = await provider.create_instance(request(agent_tls))
    assert third.ips == first.ips  # the freed address is reused
    for instance in (second, third):
        await provider.delete_instance(instance.id)
    assert await provider.list_instances({}) == []


@pytest.mark.root
@pytest.mark.netns
async def test_netns_create_failure_leaves_nothing(state_dir: Path, agent_tls: AgentTLS) -> None:
    settings = LocalSettings(subnet="198.19.254.0/24", bridge="name-too-long-for-linux",
                             state_dir=str(state_dir), netns="on")
    provider = LocalProvider(settings, node_name=NODE)
    before = _netns_names()
    with pytest.raises(ProviderError, match="name-too-long-for-linux"):
        await provider.create_instance(request(agent_tls))
    assert _entries(state_dir) == []
    assert _netns_names() == before
    assert await provider.list_instances({}) == []


async def test_loopback_vm_lifecycle(loopback_provider: LocalSetup, agent_tls: AgentTLS
                                     ) -> None:
    await loopback_provider.provider.verify_config()
    assert not loopback_provider.provider.uses_netns
    instance, pgid = await _exercise_vm(loopback_provider, agent_tls, None)
    subnet = IPv4Network(loopback_provider.settings.loopback_subnet)
    assert instance.ips[0] in subnet
    assert instance.ips[0] != IPv4Address(int(subnet.network_address) + 1)
    await _delete_and_check(loopback_provider, instance, pgid)


async def test_records_survive_a_new_provider(loopback_provider: LocalSetup,
                                              agent_tls: AgentTLS) -> None:
    """A restarted adaptor lists the VMs started before and deletes them by their records."""
    first = loopback_provider.provider
    instance = await first.create_instance(request(agent_tls))
    pgid = json.loads((Path(loopback_provider.settings.state_dir) / instance.id /
                       "instance.json").read_text())["pid"]
    await first.aclose()
    again = LocalProvider(loopback_provider.settings, node_name=NODE)
    listed = await again.list_instances({NODE_TAG: NODE})
    assert [(i.id, i.state) for i in listed] == [(instance.id, "running")]
    await again.delete_instance(instance.id)
    assert not group_alive(pgid)
    assert await again.list_instances({}) == []


async def test_delete_unknown_and_foreign_ids(loopback_provider: LocalSetup) -> None:
    provider = loopback_provider.provider
    await provider.delete_instance("0123456789")
    await provider.delete_instance("../../etc")
    assert await provider.instance_types() is None


async def test_stopped_vm_is_reported_not_pruned(loopback_provider: LocalSetup,
                                                 agent_tls: AgentTLS) -> None:
    provider = loopback_provider.provider
    instance = await provider.create_instance(request(agent_tls))
    pgid = json.loads((Path(loopback_provider.settings.state_dir) / instance.id /
                       "instance.json").read_text())["pid"]
    os.killpg(pgid, 9)
    fresh = LocalProvider(loopback_provider.settings, node_name=NODE)
    for _ in range(100):
        listed = await fresh.list_instances({})
        if listed and listed[0].state == "stopped":
            break
        await asyncio.sleep(0.05)
    assert [(i.id, i.state) for i in listed] == [(instance.id, "stopped")]
    await fresh.delete_instance(instance.id)
    assert await fresh.list_instances({}) == []


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("subnet", "192.168.1.0/33", "LOCAL_SUBNET"),
        ("subnet", "fd00::/64", "not an IPv4 subnet"),
        ("loopback_subnet", "10.1.0.0/24", "not inside 127.0.0.0/8"),
        ("netns", "maybe", "LOCAL_NETNS"),
    ],
)
def test_bad_settings_are_config_errors(field: str, value: str, message: str) -> None:
    settings = LocalSettings(**cast(dict[str, Any], {field: value}))
    with pytest.raises(ConfigError, match=message):
        LocalProvider(settings, node_name=NODE)


async def test_verify_config_reports_missing_executables(tmp_path: Path) -> None:
    settings = LocalSettings(state_dir=str(tmp_path), netns="off",
                             forwarder=str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="agent-protocol-forwarder executable not found"):
        await LocalProvider(settings, node_name=NODE).verify_config()
    long_dir = tmp_path / ("d" * 100)
    settings = LocalSettings(state_dir=str(long_dir), netns="off")
    with pytest.raises(ConfigError, match="too long"):
        await LocalProvider(settings, node_name=NODE).verify_config()
