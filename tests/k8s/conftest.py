"""Fixtures: the loopback kube-apiserver (tests.fakes.kubeapi) seeded with a node, and
clients that reach it through a real kubeconfig (HTTPS, test CA, bearer token)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from k8s.access import Backoff, Target, detect
from tests.fakes.kubeapi import FakeKubeAPI

NODE = "worker-1"
FAST = Backoff(initial=0.01, maximum=0.05)


@pytest.fixture
async def kubeapi(tmp_path: Path) -> AsyncIterator[FakeKubeAPI]:
    api = FakeKubeAPI(tmp_path)
    await api.start()
    api.put("nodes", {"metadata": {"name": NODE, "annotations": {"a": "b"}},
                      "status": {"capacity": {"cpu": "4"}}})
    try:
        yield api
    finally:
        await api.aclose()


def target_for(api: FakeKubeAPI, tmp_path: Path, token: str = "adaptor-token") -> Target:
    target = detect({}, str(api.kubeconfig(tmp_path / f"kubeconfig-{token}", token)))
    assert target is not None
    return target


@pytest.fixture
def target(kubeapi: FakeKubeAPI, tmp_path: Path) -> Target:
    return target_for(kubeapi, tmp_path)


def seed_pod(api: FakeKubeAPI, name: str, namespace: str = "default",
             **spec: Any) -> dict[str, Any]:
    return api.put("pods", {"metadata": {"name": name, "namespace": namespace},
                            "spec": {"nodeName": NODE, "containers": [], **spec}})
