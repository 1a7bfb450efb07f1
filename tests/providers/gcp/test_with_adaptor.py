"""The whole adaptor (``cloud-api-adaptor gcp``) against the loopback Compute endpoint, 5 pods.

Everything that speaks TCP runs in a network namespace the test creates: the Compute endpoint
and the stand-in pod VMs (:mod:`tests.providers.gcp.cloud`, which serves a mutual-TLS test
forwarder on each instance's ``networkIP`` once its insert is done), and the adaptor, whose
real google-cloud-compute SDK is pointed at the endpoint with ``GCP_API_ENDPOINT``. The test
drives the adaptor as the Kata shim does, through unix sockets, whose paths are not
namespaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from providers.base import NODE_TAG
from tests.adaptor.helpers import eventually
from tests.adaptor.shim import Shim
from tests.fakes import leakcheck
from tests.netns import Netns, NetnsPool
from tests.providers.adaptorworld import (
    REPO,
    WorldDir,
    adaptor_env,
    pods_through_the_adaptor,
    wait_serving,
)
from tests.providers.aws.fleet import netns_id
from tests.providers.aws.nsworld import _adaptor_command, _spawn, _stop

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.timeout(120)]

PODS = 5
NAMESPACE = "gcp-e2e"
API_PORT = 8089
FORWARDER_PORT = 15150
PROJECT = "pp-project"
ZONE = "us-central1-a"


@dataclass
class GcpWorld(WorldDir):
    ns: Netns
    node: str
    cloud: Any
    adaptor: Any = None

    @property
    def log_path(self) -> str:
        return os.path.join(self.root, "adaptor.log")

    def events(self, kind: str) -> list[dict[str, Any]]:
        lines = self.read("cloud.jsonl").splitlines()
        return [e for e in map(json.loads, filter(None, lines)) if e["event"] == kind]

    def log(self, name: str = "adaptor.log") -> str:
        return self.read(name)

    async def start_adaptor(self, log_level: str) -> None:
        env = {
            **adaptor_env(self, node=self.node, forwarder_port=FORWARDER_PORT,
                          log_level=log_level),
            "GCP_PROJECT_ID": PROJECT, "GCP_ZONE": ZONE, "GCP_NETWORK": "default",
            "PODVM_IMAGE_NAME": "podvm-image", "GCP_MACHINE_TYPE": "n2d-standard-2",
            "GCP_CONFIDENTIAL_TYPE": "SEV_SNP",
            "GCP_API_ENDPOINT": f"http://127.0.0.1:{API_PORT}",
            "CLOUD_CONFIG_VERIFY": "true",
            "LOG_FORMAT": "json",  # json keeps log extras
        }
        self.adaptor = _spawn(["ip", "netns", "exec", self.ns.name, *_adaptor_command(), "gcp"],
                              self.log_path, env)
        await wait_serving(self.adaptor, self.socket, self.log)


@contextlib.asynccontextmanager
async def gcp_world(node: str) -> AsyncIterator[GcpWorld]:
    root = tempfile.mkdtemp(prefix="ppgcp", dir="/tmp")  # short: unix socket paths
    os.makedirs(os.path.join(root, "agents"))
    pool = NetnsPool()
    world: GcpWorld | None = None
    try:
        ns = pool.create("gcp")
        cloud = _spawn(["ip", "netns", "exec", ns.name, os.environ.get("PYTHON", _python()),
                        "-m", "tests.providers.gcp.cloud", "--port", str(API_PORT),
                        "--forwarder-port", str(FORWARDER_PORT),
                        "--agents", os.path.join(root, "agents"),
                        "--events", os.path.join(root, "cloud.jsonl"),
                        "--project", PROJECT, "--zone", ZONE,
                        "--not-in-netns", str(netns_id())],
                       os.path.join(root, "cloud.log"), {**os.environ, "PYTHONPATH": REPO})
        world = GcpWorld(root=root, ns=ns, node=node, cloud=cloud)
        async with asyncio.timeout(30):
            while not world.events("ready"):
                if cloud.poll() is not None:
                    raise AssertionError(f"cloud exited: {world.log('cloud.log')[-3000:]}")
                await asyncio.sleep(0.05)
        yield world
    finally:
        if world is not None:
            _stop(world.adaptor, 20.0)
            _stop(world.cloud, 10.0)
        pool.close()
        if not os.environ.get("PEERPODS_KEEP_TEST_DIR"):
            shutil.rmtree(root, ignore_errors=True)


def _item(body: dict[str, Any], key: str) -> str:
    return next(i["value"] for i in body["metadata"]["items"] if i["key"] == key)


def _python() -> str:
    import sys

    return sys.executable


async def test_five_pods_through_the_adaptor_on_the_compute_endpoint() -> None:
    node = f"node-{uuid.uuid4().hex[:8]}"
    async with gcp_world(node) as world:
        await world.start_adaptor("debug")
        shim = Shim(world.socket)
        pods = await pods_through_the_adaptor(world.agents_dir, shim, PODS, NAMESPACE)
        results = {instance: (sid, pod) for sid, pod, instance in pods}
        assert all(instance.isdigit() for instance in results), results  # GCE's numeric ids
        await eventually(lambda: len(world.events("stopped")) == PODS, timeout=10)
        assert _stop(world.adaptor, 20.0) == 0, world.log()[-3000:]
        world.adaptor = None
        assert _stop(world.cloud, 10.0) == 0
        [summary] = world.events("summary")
        started = {e["instance"]: e for e in world.events("started")}
        log = world.log()

    assert not world.events("failed")
    assert set(started) == set(results)
    assert summary["left"] == []  # every instance deleted by StopVM
    assert len(summary["inserts"]) == PODS
    for body in summary["inserts"]:
        assert body["confidentialInstanceConfig"]["confidentialInstanceType"] == "SEV_SNP"
        assert body["labels"]["peerpods-node"] == node
        assert json.loads(_item(body, "peerpods-tags"))[NODE_TAG] == node
    for instance_id, event in started.items():
        sid, pod = results[instance_id]
        assert event["sandbox"] == sid and event["pod"] == pod
        assert event["name"] == f"podvm-{pod}-{sid[:8]}"
        assert event["namespace"] == NAMESPACE and event["tls"] is True
        assert ipaddress.ip_address(event["ip"]) in ipaddress.ip_network("10.128.0.0/20")
        # The user-data (apf.json with the VM's TLS key) never reaches the debug log.
        assert len(event["user_data_b64"]) > 1000
        assert event["user_data_b64"] not in log
    assert len({e["ip"] for e in started.values()}) == PODS
    assert '"level": "debug"' in log  # debug lines were written
    assert leakcheck.leaks_in(log) == []
