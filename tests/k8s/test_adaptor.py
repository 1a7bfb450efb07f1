"""The adaptor with Kubernetes access, driven through its real sockets as the Kata shim
drives it, against the loopback kube-apiserver: PeerPod objects (upstream
``pkg/adaptor/k8sops/peerpod.go OwnPeerPod``/``ReleasePeerPod``), ``auth.json`` from pull
secrets (``node.go GetImagePullSecrets``, ``cloud.go`` CreateVM) and ``/startup``
(``pkg/probe/checker.go GetAllPeerPods``)."""

from __future__ import annotations

import base64
import json
import logging
import re
import shutil
import ssl
import tempfile
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from adaptor.config import AdaptorSettings
from adaptor.server import Daemon
from k8s.access import Target
from k8s.cluster import Cluster
from k8s.objects import FINALIZER
from protocols import userdata
from tests.adaptor.conftest import FAST_RETRY, make_settings
from tests.adaptor.shim import Shim, shim_annotations
from tests.fakes.cloud import FakeCloud
from tests.fakes.kubeapi import FakeKubeAPI
from tests.fakes.network import FakeWorkerNetwork
from tests.k8s.conftest import FAST, NODE, seed_pod

SID = "5e" * 32
pytestmark = pytest.mark.usefixtures("kubeapi")


@pytest.fixture
def short_dir() -> Iterator[str]:
    """Unix socket paths must stay under 108 bytes."""
    path = tempfile.mkdtemp(prefix="pk", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def cloud(short_dir: str) -> AsyncIterator[FakeCloud]:
    fake = FakeCloud(short_dir)
    yield fake
    await fake.aclose()


@pytest.fixture
def settings(short_dir: str, cloud: FakeCloud) -> AdaptorSettings:
    return make_settings(short_dir, cloud.port, node_name=NODE, pod_uid="caa-pod-uid")


def new_daemon(settings: AdaptorSettings, cloud: FakeCloud, target: Target) -> Daemon:
    cluster = Cluster(target, node_name=NODE, pod_uid=settings.pod_uid, limit=10,
                      cloud_provider="fake", runtime_class="kata-remote", backoff=FAST,
                      close_grace=0.5)
    return Daemon(settings, cloud.provider, network=FakeWorkerNetwork(),
                  delete_retry=FAST_RETRY, cluster=cluster)


@pytest.fixture
async def daemon(settings: AdaptorSettings, cloud: FakeCloud,
                 target: Target) -> AsyncIterator[Daemon]:
    instance = new_daemon(settings, cloud, target)
    await instance.start()
    yield instance
    await instance.aclose()


def peerpods(api: FakeKubeAPI) -> list[dict[str, Any]]:
    return api.list("peerpods")


async def test_peerpod_created_then_released(daemon: Daemon, cloud: FakeCloud,
                                             kubeapi: FakeKubeAPI) -> None:
    pod = seed_pod(kubeapi, "web", "prod")
    shim = Shim(daemon.settings.socket)
    await shim.create_vm(SID, shim_annotations(pod="web", namespace="prod"))
    await shim.start_vm(SID)
    instance_id = cloud.provider.created[0]
    await kubeapi.wait_for(lambda: len(peerpods(kubeapi)) == 1)
    (pp,) = peerpods(kubeapi)
    meta = pp["metadata"]
    assert re.fullmatch(r"web-resource-[a-z0-9]{5}", meta["name"])
    assert meta["namespace"] == "prod"
    assert meta["finalizers"] == [FINALIZER]
    assert meta["ownerReferences"] == [{
        "apiVersion": "v1", "kind": "Pod", "name": "web", "uid": pod["metadata"]["uid"],
        "controller": True, "blockOwnerDeletion": True}]
    assert pp["spec"] == {"cloudProvider": "fake", "instanceID": instance_id}
    assert daemon.manager is not None
    record = daemon.manager.record(SID)
    assert record is not None and record.peerpod == meta["name"]

    await shim.stop_vm(SID)
    await kubeapi.wait_for(lambda: not peerpods(kubeapi)[0]["metadata"].get("finalizers"))
    # The Pod's deletion lets the garbage collector delete it: nothing holds it back.
    await _delete(kubeapi, "prod", meta["name"])
    assert peerpods(kubeapi) == []


async def _delete(api: FakeKubeAPI, namespace: str, name: str) -> None:
    headers = {"Authorization": "Bearer ctrl-token"}
    url = f"{api.url}/apis/confidentialcontainers.org/v1alpha1/namespaces/{namespace}" \
        f"/peerpods/{name}"
    context = ssl.create_default_context(cafile=str(api.ca_path))
    async with aiohttp.ClientSession() as session, \
            session.delete(url, headers=headers, ssl=context) as response:
        assert response.status == 200


async def test_restarted_adaptor_still_releases(settings: AdaptorSettings, cloud: FakeCloud,
                                                target: Target, kubeapi: FakeKubeAPI) -> None:
    seed_pod(kubeapi, "web")
    first = new_daemon(settings, cloud, target)
    await first.start()
    shim = Shim(settings.socket)
    await shim.create_vm(SID)
    await shim.start_vm(SID)
    await kubeapi.wait_for(lambda: len(peerpods(kubeapi)) == 1)
    await first.aclose()  # the pod VM keeps running; the record keeps the PeerPod's name
    second = new_daemon(settings, cloud, target)
    await second.start()
    try:
        kubeapi.fail(409, verb="patch", resource="peerpods")  # a conflict is retried
        await Shim(settings.socket).stop_vm(SID)
        await kubeapi.wait_for(lambda: not peerpods(kubeapi)[0]["metadata"].get("finalizers"))
    finally:
        await second.aclose()
    patches = [c for c in kubeapi.calls if (c.verb, c.resource) == ("patch", "peerpods")]
    assert len(patches) == 2


async def test_api_server_down_does_not_block_pods(daemon: Daemon, cloud: FakeCloud,
                                                   kubeapi: FakeKubeAPI) -> None:
    seed_pod(kubeapi, "web")
    await kubeapi.stop()
    shim = Shim(daemon.settings.socket)
    await shim.create_vm(SID)
    await shim.start_vm(SID)  # served while the API server is down
    assert cloud.provider.created
    await kubeapi.start()
    await kubeapi.wait_for(lambda: len(peerpods(kubeapi)) == 1)
    await kubeapi.wait_for(
        lambda: "kata.peerpods.io/vm" in (kubeapi.get("nodes", NODE) or {})["status"]["capacity"])


async def test_peerpod_not_created_before_a_restart_is_created_after(
        settings: AdaptorSettings, cloud: FakeCloud, target: Target,
        kubeapi: FakeKubeAPI) -> None:
    seed_pod(kubeapi, "web")
    await kubeapi.stop()
    first = new_daemon(settings, cloud, target)
    await first.start()
    shim = Shim(settings.socket)
    await shim.create_vm(SID)
    await shim.start_vm(SID)
    assert first.manager is not None
    record = first.manager.record(SID)
    assert record is not None and record.peerpod
    await first.aclose()  # the API server never answered: no PeerPod yet
    await kubeapi.start()
    second = new_daemon(settings, cloud, target)
    await second.start()
    try:
        await kubeapi.wait_for(lambda: kubeapi.get("peerpods", record.peerpod, "default")
                               is not None)
        await Shim(settings.socket).stop_vm(SID)
        await kubeapi.wait_for(
            lambda: not kubeapi.list("peerpods")[0]["metadata"].get("finalizers"))
    finally:
        await second.aclose()


def _dockerconfig(auths: dict[str, Any]) -> dict[str, str]:
    raw = json.dumps({"auths": auths}).encode()
    return {".dockerconfigjson": base64.b64encode(raw).decode()}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _seed_secret(api: FakeKubeAPI, name: str, data: dict[str, str],
                 kind: str = "kubernetes.io/dockerconfigjson") -> None:
    api.put("secrets", {"metadata": {"name": name, "namespace": "default"}, "type": kind,
                        "data": data})


async def _user_data_files(daemon: Daemon, cloud: FakeCloud) -> dict[str, str]:
    shim = Shim(daemon.settings.socket)
    await shim.create_vm(SID)
    await shim.start_vm(SID)
    request = cloud.provider.requests[cloud.provider.created[0]]
    return {f.path: f.content for f in userdata.parse(request.user_data)}


async def test_auth_json_from_pod_and_service_account(daemon: Daemon, cloud: FakeCloud,
                                                      kubeapi: FakeKubeAPI) -> None:
    kubeapi.put("serviceaccounts", {"metadata": {"name": "builder", "namespace": "default"},
                                    "imagePullSecrets": [{"name": "sa-secret"},
                                                         {"name": "missing"}]})
    seed_pod(kubeapi, "web", serviceAccountName="builder",
             imagePullSecrets=[{"name": "pod-secret"}, {"name": "old-style"}])
    _seed_secret(kubeapi, "sa-secret", _dockerconfig({
        "quay.io": {"auth": _b64("sa:1")}, "ghcr.io": {"username": "u", "password": "p"}}))
    _seed_secret(kubeapi, "pod-secret", _dockerconfig({"quay.io": {"auth": _b64("pod:2")}}))
    cfg = json.dumps({"registry.example": {"username": "x", "password": "y",
                                           "email": "e"}}).encode()
    _seed_secret(kubeapi, "old-style", {".dockercfg": base64.b64encode(cfg).decode()},
                 kind="kubernetes.io/dockercfg")
    files = await _user_data_files(daemon, cloud)
    # The pod's secret wins over the ServiceAccount's for quay.io; username and password
    # become "auth"; the missing secret is skipped.
    assert json.loads(files[userdata.AUTH_JSON_PATH]) == {"auths": {
        "quay.io": {"auth": _b64("pod:2")}, "ghcr.io": {"auth": _b64("u:p")},
        "registry.example": {"auth": _b64("x:y")}}}
    verbs = {(c.verb, c.resource) for c in kubeapi.calls}
    assert {("get", "pods"), ("get", "serviceaccounts"), ("get", "secrets")} <= verbs


async def test_auth_json_over_the_cap_is_not_sent(daemon: Daemon, cloud: FakeCloud,
                                                  kubeapi: FakeKubeAPI,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    kubeapi.put("serviceaccounts", {"metadata": {"name": "default", "namespace": "default"}})
    seed_pod(kubeapi, "web", imagePullSecrets=[{"name": "big"}])
    auths = {f"r{i}.example": {"auth": _b64("u" * 200)} for i in range(60)}
    _seed_secret(kubeapi, "big", _dockerconfig(auths))
    with caplog.at_level(logging.WARNING, logger="k8s"):
        files = await _user_data_files(daemon, cloud)
    assert userdata.AUTH_JSON_PATH not in files
    assert any("over the 12288-byte limit" in r.getMessage() for r in caplog.records)


async def _startup(daemon: Daemon) -> int:
    async with aiohttp.ClientSession() as session, \
            session.get(f"http://127.0.0.1:{daemon.probe_port}/startup") as response:
        return response.status


async def test_startup_waits_for_the_peer_pods_of_the_node(daemon: Daemon,
                                                           kubeapi: FakeKubeAPI) -> None:
    # upstream: pkg/probe/checker.go GetAllPeerPods (pods with spec.nodeName, runtime class
    # RUNTIMECLASS_NAME, Ready condition True) and probe.go StartupHandler (not checked
    # again once it held); the lastTransitionTime rule is left out (README, differences).
    def ready(status: str) -> dict[str, Any]:
        return {"conditions": [{"type": "Ready", "status": status,
                                "lastTransitionTime": "2026-01-01T00:00:00Z"}]}

    peer = seed_pod(kubeapi, "peer", runtimeClassName="kata-remote")
    peer["status"] = ready("False")
    seed_pod(kubeapi, "plain")["status"] = ready("False")  # another runtime class
    kubeapi.put("pods", {"metadata": {"name": "elsewhere", "namespace": "default"},
                         "spec": {"nodeName": "worker-2", "runtimeClassName": "kata-remote"},
                         "status": ready("False")})
    assert await _startup(daemon) == 503
    peer["status"] = ready("True")
    assert await _startup(daemon) == 200
    peer["status"] = ready("False")
    assert await _startup(daemon) == 200  # checked until it held once, as upstream
