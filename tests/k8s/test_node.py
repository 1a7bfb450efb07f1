"""The node extended resource and its owner annotation, as upstream's
``pkg/adaptor/k8sops/node.go`` (``AdvertiseExtendedResources``, ``RemoveExtendedResources``)
and its e2e ``TestLibvirtExtendedResourcesAfterRollout``."""

from __future__ import annotations

from pathlib import Path

import pytest

from k8s.access import make_client
from k8s.node import NodeResource
from k8s.objects import OWNER_ANNOTATION
from tests.adaptor.helpers import eventually
from tests.fakes.kubeapi import FakeKubeAPI
from tests.k8s.conftest import FAST, NODE, target_for


def capacity(api: FakeKubeAPI) -> str | None:
    node = api.get("nodes", NODE)
    assert node is not None
    return node["status"]["capacity"].get("kata.peerpods.io/vm")


def owner(api: FakeKubeAPI) -> str | None:
    node = api.get("nodes", NODE)
    assert node is not None
    return node["metadata"].get("annotations", {}).get(OWNER_ANNOTATION)


def resource(api: FakeKubeAPI, tmp_path: Path, uid: str, limit: int = 10) -> NodeResource:
    client = make_client(target_for(api, tmp_path), field_manager="test")
    return NodeResource(client, NODE, uid, limit, backoff=FAST)


async def test_set_at_start_removed_at_shutdown(kubeapi: FakeKubeAPI, tmp_path: Path) -> None:
    node = resource(kubeapi, tmp_path, "uid-1", limit=7)
    node.start()
    await node.advertised.wait()
    assert capacity(kubeapi) == "7"
    assert owner(kubeapi) == "uid-1"
    node_obj = kubeapi.get("nodes", NODE)
    assert node_obj is not None and node_obj["metadata"]["annotations"]["a"] == "b"
    await node.aclose()
    assert capacity(kubeapi) is None
    node_obj = kubeapi.get("nodes", NODE)
    assert node_obj is not None and node_obj["status"]["capacity"] == {"cpu": "4"}


async def test_kept_across_rolling_restart(kubeapi: FakeKubeAPI, tmp_path: Path) -> None:
    old = resource(kubeapi, tmp_path, "uid-old")
    old.start()
    await old.advertised.wait()
    new = resource(kubeapi, tmp_path, "uid-new")  # maxSurge 1: the new pod starts first
    new.start()
    await new.advertised.wait()
    await old.aclose()  # the old one sees another owner and leaves the capacity
    assert capacity(kubeapi) == "10"
    assert owner(kubeapi) == "uid-new"
    await new.aclose()
    assert capacity(kubeapi) is None


async def test_negative_limit_advertises_nothing(kubeapi: FakeKubeAPI, tmp_path: Path) -> None:
    node = resource(kubeapi, tmp_path, "uid-1", limit=-1)
    node.start()
    await node.aclose()
    assert capacity(kubeapi) is None and owner(kubeapi) is None
    assert not kubeapi.calls


async def test_api_server_down_at_start_then_back(kubeapi: FakeKubeAPI, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    await kubeapi.stop()
    node = resource(kubeapi, tmp_path, "uid-1")
    node.start()
    await eventually(lambda: any("API server unreachable" in r.getMessage()
                                 for r in caplog.records))
    assert not node.advertised.is_set()
    kubeapi.fail(500, verb="patch", resource="nodes")  # and one server error when it is back
    await kubeapi.start()
    await node.advertised.wait()
    assert capacity(kubeapi) == "10" and owner(kubeapi) == "uid-1"
    await node.aclose()
