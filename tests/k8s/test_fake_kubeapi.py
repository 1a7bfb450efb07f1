"""The loopback kube-apiserver keeps the API's rules the code relies on: patch types,
resourceVersion conflicts, finalizers and deletionTimestamp, tokens, Leases, outages."""

from __future__ import annotations

from pathlib import Path

import httpx2
import pytest
from lightkube import ApiError
from lightkube.resources.core_v1 import Node
from lightkube.types import PatchType

from k8s.access import make_client
from k8s.objects import Lease, PeerPod
from tests.fakes.kubeapi import ApiFailure, Call, FakeKubeAPI, json_patch, merge_patch
from tests.k8s.conftest import NODE, target_for


def test_patch_documents() -> None:
    doc = {"a": {"b": 1, "c": 2}, "l": [1]}
    assert merge_patch(doc, {"a": {"b": None, "d": 3}}) == {"a": {"c": 2, "d": 3}, "l": [1]}
    assert json_patch(doc, [{"op": "add", "path": "/a/x~1y", "value": "1"}])["a"]["x/y"] == "1"
    assert json_patch(doc, [{"op": "remove", "path": "/l"}]) == {"a": {"b": 1, "c": 2}}
    with pytest.raises(ApiFailure):
        json_patch(doc, [{"op": "remove", "path": "/missing"}])
    assert doc == {"a": {"b": 1, "c": 2}, "l": [1]}  # not modified in place


async def test_api_rules(kubeapi: FakeKubeAPI, tmp_path: Path) -> None:
    kubeapi.tokens["tester-token"] = "tester"  # not a deployed account: no RBAC check
    client = make_client(target_for(kubeapi, tmp_path, "tester-token"), field_manager="t")
    node = await client.patch(Node, NODE, {"metadata": {"annotations": {"x": "1"}}},
                              patch_type=PatchType.STRATEGIC)
    assert node.metadata is not None and node.metadata.annotations == {"a": "b", "x": "1"}
    created = await client.create(PeerPod.from_dict({
        "metadata": {"name": "p", "namespace": "ns", "finalizers": ["f"]}, "spec": {}}))
    stale = created.to_dict()
    await client.patch(PeerPod, "p", {"spec": {"instanceID": "i"}}, namespace="ns",
                       patch_type=PatchType.MERGE)
    with pytest.raises(ApiError) as conflict:
        await client.replace(PeerPod.from_dict(stale))
    assert conflict.value.status.code == 409
    await client.delete(PeerPod, "p", namespace="ns")  # marked, kept for its finalizer
    marked = kubeapi.get("peerpods", "p", "ns")
    assert marked is not None and marked["metadata"]["deletionTimestamp"]
    await client.patch(PeerPod, "p", [{"op": "remove", "path": "/metadata/finalizers"}],
                       namespace="ns", patch_type=PatchType.JSON)
    assert kubeapi.get("peerpods", "p", "ns") is None  # gone once its finalizers are
    await client.close()
    wrong = make_client(target_for(kubeapi, tmp_path, "stolen"), field_manager="t")
    with pytest.raises(ApiError) as denied:
        await wrong.get(Node, NODE)
    assert denied.value.status.code == 401
    await wrong.close()


async def test_leases_and_outages(kubeapi: FakeKubeAPI, tmp_path: Path) -> None:
    kubeapi.tokens["tester-token"] = "tester"
    client = make_client(target_for(kubeapi, tmp_path, "tester-token"), field_manager="t")
    lease = {"metadata": {"name": "l", "namespace": "ns"}, "spec": {"holderIdentity": "a"}}
    created = (await client.create(Lease.from_dict(lease))).to_dict()
    assert created["apiVersion"] == "coordination.k8s.io/v1" and created["kind"] == "Lease"
    with pytest.raises(ApiError) as exists:
        await client.create(Lease.from_dict(lease))
    assert (exists.value.status.code, exists.value.status.reason) == (409, "AlreadyExists")
    kubeapi.before(lambda: kubeapi.put("leases", {**created, "spec": {"holderIdentity": "b"}}),
                   verb="update", resource="leases")
    with pytest.raises(ApiError) as conflict:  # the write that landed first bumped the version
        await client.replace(Lease.from_dict({**created, "spec": {"holderIdentity": "c"}}))
    assert conflict.value.status.code == 409
    current = (await client.get(Lease, "l", namespace="ns")).to_dict()
    assert current["spec"] == {"holderIdentity": "b"}
    assert kubeapi.calls[-1] == Call("tester", "get", "coordination.k8s.io", "leases", "", "ns")
    await kubeapi.stop()  # kept-alive connections end too: the next call fails
    with pytest.raises(httpx2.TransportError):
        await client.get(Lease, "l", namespace="ns")
    await kubeapi.start()
    assert (await client.get(Lease, "l", namespace="ns")).to_dict()["spec"]["holderIdentity"] \
        == "b"
    await client.close()
