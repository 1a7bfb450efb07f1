"""The whole adaptor (``cloud-api-adaptor azure``) against the loopback ARM endpoint, 5 pods.

The ARM endpoint, its stand-in VMs and the adaptor run in a network namespace the test creates
(:mod:`tests.providers.azure.armworld`): the VMs' private NIC addresses exist only there. The
adaptor authenticates with a client secret at the endpoint's token URL, trusts its test CA
through ``REQUESTS_CA_BUNDLE`` and uses the real Azure SDK. The test drives it as the Kata shim
does, through unix sockets, and checks what reached each sandbox's agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.adaptor.helpers import eventually
from tests.adaptor.shim import Shim
from tests.fakes import leakcheck
from tests.netns import NetnsPool
from tests.providers.adaptorworld import (
    REPO,
    WorldDir,
    adaptor_env,
    pods_through_the_adaptor,
    wait_serving,
)
from tests.providers.aws.fleet import netns_id
from tests.providers.aws.nsworld import _adaptor_command, _python, _spawn, _stop

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.timeout(180)]

PODS = 5
NAMESPACE = "azure-e2e"
ARM_PORT = 8443
FORWARDER_PORT = 15150
SUBNET = "10.1.0.0/24"


@dataclass
class AzureWorld(WorldDir):
    ns_name: str
    node: str
    arm: Any
    adaptor: Any = None

    def events(self, kind: str) -> list[dict[str, Any]]:
        lines = self.read("events.jsonl").splitlines()
        return [e for e in map(json.loads, filter(None, lines)) if e["event"] == kind]

    def world(self) -> dict[str, Any]:
        return dict(json.loads(self.read("world.json")))

    async def start_adaptor(self) -> None:
        w = self.world()
        env = {
            **adaptor_env(self, node=self.node, forwarder_port=FORWARDER_PORT),
            "REQUESTS_CA_BUNDLE": os.path.join(self.root, "ca.pem"),
            "AZURE_ARM_ENDPOINT": w["url"], "AZURE_AUTHORITY_HOST": w["url"],
            "AZURE_CLIENT_ID": w["client_id"], "AZURE_CLIENT_SECRET": w["client_secret"],
            "AZURE_TENANT_ID": w["tenant"], "AZURE_SUBSCRIPTION_ID": w["subscription"],
            "AZURE_REGION": w["region"], "AZURE_RESOURCE_GROUP": w["resource_group"],
            "AZURE_SUBNET_ID": w["subnet_id"], "AZURE_IMAGE_ID": w["image_id"],
            "CLOUD_CONFIG_VERIFY": "true",
        }
        self.adaptor = _spawn(["ip", "netns", "exec", self.ns_name, *_adaptor_command(),
                               "azure"], os.path.join(self.root, "adaptor.log"), env)
        await wait_serving(self.adaptor, self.socket, lambda: self.read("adaptor.log"))


@contextlib.asynccontextmanager
async def azure_world(node: str) -> AsyncIterator[AzureWorld]:
    root = tempfile.mkdtemp(prefix="ppaz", dir="/tmp")  # short: unix socket paths
    os.makedirs(os.path.join(root, "agents"))
    pool = NetnsPool()
    arm = None
    world = None
    try:
        ns = pool.create("az")
        arm = _spawn(["ip", "netns", "exec", ns.name, _python(), "-m",
                      "tests.providers.azure.armworld", "--port", str(ARM_PORT),
                      "--subnet", SUBNET, "--dir", root, "--forwarder-port",
                      str(FORWARDER_PORT), "--agents", os.path.join(root, "agents"),
                      "--not-in-netns", str(netns_id())],
                     os.path.join(root, "armworld.log"), {**os.environ, "PYTHONPATH": REPO})
        world = AzureWorld(root, ns.name, node, arm)
        async with asyncio.timeout(30):
            while not world.events("ready"):
                if arm.poll() is not None:
                    raise AssertionError(f"armworld exited: {world.read('armworld.log')}")
                await asyncio.sleep(0.05)
        yield world
    finally:
        if world is not None:
            _stop(world.adaptor, 20.0)
        _stop(arm, 10.0)
        pool.close()
        if not os.environ.get("PEERPODS_KEEP_TEST_DIR"):
            shutil.rmtree(root, ignore_errors=True)


async def test_five_pods_through_the_adaptor_on_the_arm_endpoint() -> None:
    node = f"node-{secrets.token_hex(4)}"
    async with azure_world(node) as world:
        secret = world.world()["client_secret"]
        leakcheck.add_secret(secret)
        await world.start_adaptor()
        shim = Shim(world.socket)
        pods = await pods_through_the_adaptor(world.agents_dir, shim, PODS, NAMESPACE)
        results = {instance_id: (sid, pod) for sid, pod, instance_id in pods}
        for instance_id, (sid, pod) in results.items():
            assert instance_id.endswith(f"/virtualMachines/podvm-{pod}-{sid[:8]}"), instance_id
        assert len(results) == PODS

        started = {e["instance"]: e for e in world.events("started")}
        assert not world.events("failed"), world.events("failed")
        assert set(started) == set(results)
        for instance_id, event in started.items():
            assert event["tls"] is True
            assert ipaddress.ip_address(event["ip"]) in ipaddress.ip_network(SUBNET)
            assert (event["sandbox"], event["pod"]) == results[instance_id]
            assert event["namespace"] == NAMESPACE
        assert len({e["ip"] for e in started.values()}) == PODS
        await eventually(
            lambda: {e["instance"] for e in world.events("stopped")} == set(results),
            timeout=20)
        assert _stop(world.adaptor, 20.0) == 0, world.read("adaptor.log")[-3000:]
        world.adaptor = None
        _stop(world.arm, 10.0)
        final = json.loads(world.read("final.json"))
        log = world.read("adaptor.log")
    # Everything ARM made for the pods went with their VMs; nothing left behind.
    assert (final["vms"], final["nics"], final["disks"]) == ([], [], []), final
    assert sorted(final["created"]) == sorted(f"podvm-{pod}-{sid[:8]}"
                                              for sid, pod in results.values())
    assert final["token_requests"] >= 1
    assert not [r for r in final["requests"] if r[2] >= 400 and r[2] != 404], final["requests"]
    assert "creating VM podvm-pod-0-" in log
    assert secret not in log
    assert "Bearer tok-" not in log
