"""deploy/ renders, and its RBAC grants exactly what the code uses of the Kubernetes API.

Today the code makes no Kubernetes API call: the adaptor's ServiceAccount is granted nothing
and mounts no token. When code starts calling the API, ``API_CLIENT_MARKERS`` finds it and
these tests fail until deploy/base/rbac.yaml and ``GRANTED`` say what it needs.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.render import (
    DEPLOY,
    NAMESPACE,
    OVERLAYS,
    ROOT,
    files_of,
    only,
    overlay_files,
    pod_spec,
    rendered,
)

SERVICE_ACCOUNT = "cloud-api-adaptor"
CODE_PACKAGES = (
    "protocols", "runtime", "podnetwork", "adaptor", "forwarder", "providers", "webhook",
)
# what in-cluster API access looks like in Python: the token path, the service host
# variable, the client libraries
API_CLIENT_MARKERS = (
    "/var/run/secrets/kubernetes.io",
    "KUBERNETES_SERVICE_HOST",
    "import kubernetes",
    "from kubernetes",
    "kubernetes_asyncio",
)
RBAC_KINDS = {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}
# (apiGroup, resource, verb) granted to the adaptor: exactly what the code calls
GRANTED: set[tuple[str, str, str]] = set()


def granted_rules(docs: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """Every (apiGroup, resource, verb) a role bound to the adaptor's ServiceAccount grants."""
    roles = {(d["kind"], d["metadata"]["name"]): d for d in docs if d["kind"] in RBAC_KINDS}
    granted: set[tuple[str, str, str]] = set()
    for doc in docs:
        if doc["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        subjects = doc.get("subjects") or []
        if not any(s.get("kind") == "ServiceAccount" and s.get("name") == SERVICE_ACCOUNT
                   for s in subjects):
            continue
        role = roles.get((doc["roleRef"]["kind"], doc["roleRef"]["name"]))
        assert role is not None, f"binding {doc['metadata']['name']} names a missing role"
        for rule in role.get("rules") or []:
            for group in rule.get("apiGroups", [""]):
                for resource in rule.get("resources", []):
                    granted.update((group, resource, verb) for verb in rule["verbs"])
    return granted


def code_calling_the_api() -> list[str]:
    hits = []
    for package in CODE_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            hits.extend(f"{path.relative_to(ROOT)}: {m}" for m in API_CLIENT_MARKERS if m in text)
    return hits


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kustomize_renders_what_the_files_hold(overlay: str) -> None:
    docs = rendered(overlay)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(d["kind"] for d in overlay_files(overlay))
    assert {"Namespace", "ServiceAccount", "DaemonSet", "ConfigMap", "Secret", "RuntimeClass",
            "CustomResourceDefinition", "Deployment", "Service",
            "MutatingWebhookConfiguration"} <= set(kinds)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_rbac_grants_exactly_what_the_code_uses(overlay: str) -> None:
    docs = rendered(overlay)
    assert granted_rules(docs) == GRANTED
    # every role in the manifests is bound: no stray grants to anyone else
    bound = {(d["roleRef"]["kind"], d["roleRef"]["name"]) for d in docs
             if d["kind"] in ("RoleBinding", "ClusterRoleBinding")}
    roles = {(d["kind"], d["metadata"]["name"]) for d in docs
             if d["kind"] in ("Role", "ClusterRole")}
    assert roles <= bound


def test_no_code_calls_the_kubernetes_api_without_rbac() -> None:
    hits = code_calling_the_api()
    assert not hits or GRANTED, (
        "code talks to the Kubernetes API; grant what it uses in deploy/base/rbac.yaml and "
        f"GRANTED, and mount the token: {hits}"
    )


def test_the_adaptor_mounts_no_token_while_nothing_is_granted() -> None:
    docs = files_of(DEPLOY / "base")
    account = only(docs, "ServiceAccount", SERVICE_ACCOUNT)
    assert account["metadata"]["namespace"] == NAMESPACE
    pod = pod_spec(only(docs, "DaemonSet", "cloud-api-adaptor-daemonset"))
    assert pod["serviceAccountName"] == SERVICE_ACCOUNT
    mounts = bool(pod.get("automountServiceAccountToken", True)) and bool(
        account.get("automountServiceAccountToken", True)
    )
    assert mounts == bool(GRANTED)


def test_the_rule_check_sees_grants() -> None:
    """The checker is not blind: upstream's old rules, bound to the adaptor, are found."""
    role = {
        "kind": "ClusterRole", "metadata": {"name": "caa"},
        "rules": [
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]},
            {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch"]},
        ],
    }
    binding = {
        "kind": "ClusterRoleBinding", "metadata": {"name": "caa"},
        "roleRef": {"kind": "ClusterRole", "name": "caa"},
        "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}],
    }
    assert granted_rules([role, binding]) == {
        ("", "secrets", "get"), ("", "secrets", "list"), ("", "nodes/status", "patch"),
    }
