"""Fixtures: the loopback kube-apiserver (tests.fakes.kubeapi) seeded with a node, and
clients that reach it through a real kubeconfig (HTTPS, test CA, bearer token)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from k8s.access import Backoff, Target, detect
from tests.fakes.kubeapi import Call, FakeKubeAPI
from tests.providers.aws.conftest import ec2, moto, world  # noqa: F401 - moto_server fixtures

NODE = "worker-1"
FAST = Backoff(initial=0.01, maximum=0.05)
RBAC = Path(__file__).resolve().parents[2] / "deploy" / "base" / "rbac.yaml"
Rule = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)
ACCOUNTS = ("cloud-api-adaptor", "peerpod-ctrl")  # the fake's "adaptor-token", "ctrl-token"


@cache
def granted(account: str) -> frozenset[Rule]:
    """What deploy/base/rbac.yaml grants the ServiceAccount ``account``."""
    docs = [d for d in yaml.safe_load_all(RBAC.read_text()) if d]
    roles = {(d["kind"], d["metadata"]["name"]): d for d in docs
             if d["kind"] in ("Role", "ClusterRole")}
    rules: set[Rule] = set()
    for binding in docs:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding") or not any(
                s["kind"] == "ServiceAccount" and s["name"] == account
                for s in binding["subjects"]):
            continue
        role = roles[(binding["roleRef"]["kind"], binding["roleRef"]["name"])]
        for rule in role["rules"]:
            rules.update((group, resource, verb) for group in rule["apiGroups"]
                         for resource in rule["resources"] for verb in rule["verbs"])
    return frozenset(rules)


def used(calls: Iterable[Call], account: str) -> set[Rule]:
    return {(c.group, c.resource + (f"/{c.subresource}" if c.subresource else ""), c.verb)
            for c in calls if c.user == account}


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
    for account in ACCOUNTS:
        extra = used(api.calls, account) - granted(account)
        assert not extra, f"{account} called what deploy/base/rbac.yaml does not grant: {extra}"


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
