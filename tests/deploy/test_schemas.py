"""Every object of every overlay is valid for the Kubernetes API server, checked offline:
built-in kinds against the Kubernetes JSON schemas bundled by ``kubernetes-validate``
(strict: unknown fields fail), kinds a CustomResourceDefinition of deploy/ defines against
that CRD's own ``openAPIV3Schema``."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from tests.deploy.render import NAMESPACE, OVERLAYS, Doc, only, rendered

# the oldest Kubernetes the manifests target, and the newest whose schemas are bundled
VERSIONS = ("1.30", kubernetes_validate.utils.latest_version())
# kinds of CRDs installed by other projects: only cert-manager's, checked by test_layout.py
EXTERNAL = {("cert-manager.io/v1", "Issuer"), ("cert-manager.io/v1", "Certificate")}


def crd_schemas(docs: list[Doc]) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> openAPIV3Schema of every CRD version in ``docs``."""
    out = {}
    for doc in docs:
        if doc["kind"] != "CustomResourceDefinition":
            continue
        spec = doc["spec"]
        for version in spec["versions"]:
            key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
            out[key] = version["schema"]["openAPIV3Schema"]
    return out


def validate(doc: Doc, crds: dict[tuple[str, str], dict[str, Any]], version: str) -> None:
    key = (doc["apiVersion"], doc["kind"])
    if key in crds:
        jsonschema.Draft7Validator(crds[key]).validate(doc)
    else:
        kubernetes_validate.validate(doc, version, strict=True)


def unique_objects() -> list[tuple[str, Doc]]:
    seen: dict[str, tuple[str, Doc]] = {}
    for overlay in OVERLAYS:
        for doc in rendered(overlay):
            seen.setdefault(json.dumps(doc, sort_keys=True), (overlay, doc))
    return list(seen.values())


@pytest.mark.parametrize("version", VERSIONS)
def test_every_object_is_valid(version: str) -> None:
    checked: set[str] = set()
    for overlay, doc in unique_objects():
        if (doc["apiVersion"], doc["kind"]) in EXTERNAL:
            continue
        try:
            validate(doc, crd_schemas(rendered(overlay)), version)
        except jsonschema.ValidationError as exc:
            name = f"{doc['kind']}/{doc['metadata']['name']}"
            pytest.fail(f"{overlay}: {name} is invalid for Kubernetes {version}: {exc.message} "
                        f"at {'/'.join(map(str, exc.absolute_path))}")
        checked.add(doc["kind"])
    assert checked >= {"Namespace", "ServiceAccount", "CustomResourceDefinition", "RuntimeClass",
                       "DaemonSet", "Deployment", "Service", "MutatingWebhookConfiguration",
                       "ConfigMap", "Secret"}


def peerpod(**spec: Any) -> Doc:
    """A PeerPod as the adaptor creates it (UPSTREAM-CAA.md §8.6)."""
    return {
        "apiVersion": "confidentialcontainers.org/v1alpha1", "kind": "PeerPod",
        "metadata": {
            "name": "nginx-resource-x7k2q", "namespace": "default",
            "finalizers": ["peer.pod/finalizer"],
            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "nginx",
                                 "uid": "b0f8c1de-1111-2222-3333-444455556666",
                                 "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": spec or {"cloudProvider": "aws", "instanceID": "i-0123456789abcdef0"},
        "status": {"cleand": False},
    }


def test_peerpods_are_valid_for_the_crd() -> None:
    docs = rendered("aws")
    crd = only(docs, "CustomResourceDefinition", "peerpods.confidentialcontainers.org")
    assert crd["spec"]["scope"] == "Namespaced"
    [version] = crd["spec"]["versions"]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    crds = crd_schemas(docs)
    validate(peerpod(), crds, VERSIONS[-1])
    for bad in (peerpod(instanceID=5), peerpod(cloudProvider=["aws"])):
        with pytest.raises(jsonschema.ValidationError):
            validate(bad, crds, VERSIONS[-1])
    wrong_status = peerpod()
    wrong_status["status"] = {"cleand": "yes"}
    with pytest.raises(jsonschema.ValidationError):
        validate(wrong_status, crds, VERSIONS[-1])


@pytest.mark.parametrize("change", ["unknown-field", "wrong-type", "missing-required"])
def test_the_validation_sees_mistakes(change: str) -> None:
    """The check is not blind: a typo, a wrong type or a missing field fails."""
    ds = copy.deepcopy(only(rendered("aws"), "DaemonSet", "cloud-api-adaptor-daemonset"))
    assert ds["metadata"]["namespace"] == NAMESPACE
    container = ds["spec"]["template"]["spec"]["containers"][0]
    if change == "unknown-field":
        container["imagePullPolicyy"] = "Always"
    elif change == "wrong-type":
        container["startupProbe"]["periodSeconds"] = "20"
    else:
        del container["name"]
    validate(only(rendered("aws"), "DaemonSet", "cloud-api-adaptor-daemonset"), {}, VERSIONS[0])
    with pytest.raises(jsonschema.ValidationError):
        validate(ds, {}, VERSIONS[0])
