"""deploy/base/rbac.yaml grants each ServiceAccount exactly the API calls its code makes:
every code path of the adaptor and of peerpod-ctrl runs here against the recording API
server (each with its own token), and the calls served are compared with the rules bound to
that ServiceAccount. (tests/k8s/conftest.py also checks, after every test of this
directory, that each call made was granted.) The Lease of peerpod-ctrl's leader election is
granted by a Role: in the namespace the controller runs in, and nowhere else."""

from __future__ import annotations

import asyncio
from pathlib import Path

import yaml

from k8s import pullsecrets
from k8s.access import make_client
from k8s.controller import PeerPodController
from k8s.leader import LeaderElector
from k8s.node import NodeResource
from k8s.peerpods import PeerPodService
from k8s.readiness import PeerPodsReady
from tests.fakes.kubeapi import FakeKubeAPI
from tests.k8s.conftest import FAST, NODE, RBAC, granted, seed_pod, target_for, used
from tests.k8s.test_controller import peerpod
from tests.k8s.test_leader import QUICK

CTRL_DEPLOYMENT = RBAC.parent / "peerpod-ctrl.yaml"


class StubProvider:
    def __init__(self) -> None:
        self.deleted: list[str] = []

    async def delete_instance(self, instance_id: str) -> None:
        self.deleted.append(instance_id)

    async def aclose(self) -> None:
        pass


async def run_adaptor_paths(api: FakeKubeAPI, tmp_path: Path) -> None:
    client = make_client(target_for(api, tmp_path, "adaptor-token"), field_manager="test")
    node = NodeResource(client, NODE, "uid-1", 10, backoff=FAST)
    node.start()
    await node.advertised.wait()
    await node.aclose()
    seed_pod(api, "web", imagePullSecrets=[{"name": "s"}])
    api.put("serviceaccounts", {"metadata": {"name": "default", "namespace": "default"}})
    api.put("secrets", {"metadata": {"name": "s", "namespace": "default"}, "data": {}})
    assert await pullsecrets.auth_json(client, "default", "web") is None
    assert (await PeerPodsReady(client, NODE, "kata-remote").check())[0]
    service = PeerPodService(client, "aws", backoff=FAST)
    name = service.instance_created("default", "web", "i-1")
    service.instance_deleted("default", name)
    await service.wait_idle()
    pp = api.get("peerpods", name, "default")
    assert pp is not None and not pp["metadata"].get("finalizers")
    await client.close()


async def run_controller_paths(api: FakeKubeAPI, tmp_path: Path) -> None:
    client = make_client(target_for(api, tmp_path, "ctrl-token"), field_manager="test")
    stub = StubProvider()
    ctrl = PeerPodController(client, lambda _name: stub, backoff=FAST)  # type: ignore[arg-type, return-value]
    task = asyncio.create_task(ctrl.run())
    api.fail(409, verb="update", resource="peerpods")
    api.put("peerpods", peerpod("old", "i-old", "uid", created="2026-01-01T00:00:00Z"))
    api.put("peerpods", peerpod("new", "i-new", "uid", created="2026-01-02T00:00:00Z"))
    await api.wait_for(lambda: api.get("peerpods", "old", "prod") is None)
    assert api.get("peerpods", "new", "prod") is not None
    assert stub.deleted == ["i-old"]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await ctrl.aclose()
    await client.close()


def ctrl_namespace() -> str:
    """Where peerpod-ctrl runs: its service account's namespace, the Lease's namespace."""
    namespace: str = yaml.safe_load(CTRL_DEPLOYMENT.read_text())["metadata"]["namespace"]
    return namespace


async def run_election_paths(api: FakeKubeAPI, tmp_path: Path) -> None:
    client = make_client(target_for(api, tmp_path, "ctrl-token"), field_manager="test")
    first = LeaderElector(client, ctrl_namespace(), identity="a", timing=QUICK)
    second = LeaderElector(client, ctrl_namespace(), identity="b", timing=QUICK)
    await first.acquire()  # get (404), create
    assert await first.try_acquire_or_renew()  # update
    assert not await second.try_acquire_or_renew()  # get
    await first.release()  # update
    assert await second.try_acquire_or_renew()  # get, update
    await client.close()


def role_namespaces(account: str, resource: str) -> set[str]:
    """Namespaces where a Role bound to ``account`` grants something on ``resource``."""
    docs = [d for d in yaml.safe_load_all(RBAC.read_text()) if d]
    roles = {(d["metadata"]["namespace"], d["metadata"]["name"]): d for d in docs
             if d["kind"] == "Role"}
    out = set()
    for binding in docs:
        if binding["kind"] != "RoleBinding" or binding["roleRef"]["kind"] != "Role":
            continue
        namespace = binding["metadata"]["namespace"]
        role = roles[(namespace, binding["roleRef"]["name"])]
        if any(s["kind"] == "ServiceAccount" and s["name"] == account
               for s in binding["subjects"]) and any(
                resource in rule["resources"] for rule in role["rules"]):
            out.add(namespace)
    return out


async def test_rbac_grants_exactly_the_calls_made(kubeapi: FakeKubeAPI, tmp_path: Path) -> None:
    await run_adaptor_paths(kubeapi, tmp_path)
    await run_controller_paths(kubeapi, tmp_path)
    await run_election_paths(kubeapi, tmp_path)
    for account in ("cloud-api-adaptor", "peerpod-ctrl"):
        assert used(kubeapi.calls, account) == granted(account), account
    lease_calls = {c.namespace for c in kubeapi.calls if c.resource == "leases"}
    assert lease_calls == role_namespaces("peerpod-ctrl", "leases") == {ctrl_namespace()}
    assert not role_namespaces("cloud-api-adaptor", "leases")


def test_rule_reader_sees_the_rules() -> None:
    """The reader is not blind: a few rules known to be there are found."""
    assert ("", "nodes/status", "patch") in granted("cloud-api-adaptor")
    assert ("confidentialcontainers.org", "peerpods", "watch") in granted("peerpod-ctrl")
    assert ("confidentialcontainers.org", "peerpods", "watch") not in granted(
        "cloud-api-adaptor")
    assert ("coordination.k8s.io", "leases", "update") in granted("peerpod-ctrl")
    assert ("coordination.k8s.io", "leases", "delete") not in granted("peerpod-ctrl")
