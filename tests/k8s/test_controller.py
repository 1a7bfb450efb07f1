"""peerpod-ctrl against the loopback kube-apiserver and moto_server's EC2, as upstream's
``src/peerpod-ctrl/controllers/peerpod_controller.go Reconcile``: a PeerPod deleted while its
finalizer is in place gets its instance deleted and then its finalizer removed; older
PeerPods of the same Pod are deleted (``isOldPeerPod``)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from k8s.access import make_client
from k8s.controller import PeerPodController, older_siblings
from k8s.ctrl_main import provider_factory
from k8s.objects import FINALIZER, PeerPod
from tests.fakes.kubeapi import FakeKubeAPI
from tests.k8s.conftest import FAST, target_for
from tests.providers.aws.conftest import World, alive_ids, make_request
from tests.providers.aws.motoserver import REGION, MotoServer


def aws_env(moto: MotoServer, world: World) -> dict[str, str]:
    """peer-pods-cm and peer-pods-secret as the controller's Deployment loads them."""
    return {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": REGION, "AWS_ENDPOINT_URL": moto.url, "PODVM_AMI_ID": world.ami,
        "AWS_SUBNET_ID": world.subnet_id, "AWS_SG_IDS": world.security_group_id,
        "AWS_IMDS_URL": "http://127.0.0.1:9", "SSH_KP_NAME": "podvm-key",
    }


@pytest.fixture
async def controller(kubeapi: FakeKubeAPI, tmp_path: Path, moto: MotoServer,
                     world: World) -> AsyncIterator[PeerPodController]:
    client = make_client(target_for(kubeapi, tmp_path, "ctrl-token"), field_manager="test")
    ctrl = PeerPodController(client, provider_factory(aws_env(moto, world)), backoff=FAST)
    task = asyncio.create_task(ctrl.run())
    await ctrl.watching.wait()
    yield ctrl
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await ctrl.aclose()
    await client.close()


def peerpod(name: str, instance_id: str, owner: str, created: str = "2026-01-01T00:00:00Z",
            ) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "prod", "finalizers": [FINALIZER],
                         "creationTimestamp": created,
                         "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "web",
                                              "uid": owner, "controller": True,
                                              "blockOwnerDeletion": True}]},
            "spec": {"cloudProvider": "aws", "instanceID": instance_id}}


async def delete(controller_client: Any, name: str) -> None:
    await controller_client.delete(PeerPod, name, namespace="prod")


async def test_deleted_peerpod_with_finalizer_deletes_the_instance(
        controller: PeerPodController, kubeapi: FakeKubeAPI, tmp_path: Path, moto: MotoServer,
        world: World, ec2: Any) -> None:
    node = f"gone-{uuid.uuid4().hex[:8]}"
    provider = provider_factory(aws_env(moto, world))("aws")
    request = make_request(node)
    instance = await provider.create_instance(request)
    await provider.aclose()
    assert alive_ids(ec2, request.tags) == {instance.id}
    kubeapi.put("peerpods", peerpod("web-resource-abcde", instance.id, "pod-uid"))
    kubeapi.fail(409, verb="update", resource="peerpods")  # one conflict, retried

    # The Pod was deleted and its node is gone: the garbage collector deletes the PeerPod.
    other = make_client(target_for(kubeapi, tmp_path, "ctrl-token"), field_manager="gc")
    await delete(other, "web-resource-abcde")
    await other.close()
    await kubeapi.wait_for(lambda: kubeapi.list("peerpods") == [], timeout=60)
    assert alive_ids(ec2, request.tags) == set()
    updates = [c for c in kubeapi.calls if (c.verb, c.resource) == ("update", "peerpods")]
    assert len(updates) == 2


async def test_older_peerpod_of_the_same_pod_is_deleted(
        controller: PeerPodController, kubeapi: FakeKubeAPI) -> None:
    # An instance id that no longer exists: the delete counts as done.
    kubeapi.put("peerpods", peerpod("web-resource-old00", "i-0123456789abcdef0", "uid-1",
                                    created="2026-01-01T00:00:00Z"))
    kubeapi.put("peerpods", peerpod("other-resource-x0000", "i-0123456789abcdef1", "uid-2",
                                    created="2025-01-01T00:00:00Z"))
    kubeapi.put("peerpods", peerpod("web-resource-new00", "i-0123456789abcdef2", "uid-1",
                                    created="2026-01-02T00:00:00Z"))
    await kubeapi.wait_for(lambda: {p["metadata"]["name"] for p in kubeapi.list("peerpods")}
                           == {"other-resource-x0000", "web-resource-new00"}, timeout=60)


def test_older_siblings() -> None:
    old = peerpod("a", "i-1", "u", created="2026-01-01T00:00:00Z")
    new = peerpod("b", "i-2", "u", created="2026-01-02T00:00:00Z")
    stranger = peerpod("c", "i-3", "v", created="2025-01-01T00:00:00Z")
    for i, obj in enumerate((old, new, stranger)):
        obj["metadata"]["uid"] = str(i)
    assert older_siblings(new, [old, new, stranger]) == [old]
    assert older_siblings(old, [old, new, stranger]) == []
