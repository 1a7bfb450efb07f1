"""deploy/base/crd-peerpods.yaml defines the resource the code uses, with upstream's schema
(``src/peerpod-ctrl/chart/crds/confidentialcontainers.org_peerpods.yaml``), and
deploy/base/rbac.yaml names the ServiceAccounts the workloads run as."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import yaml

from k8s.objects import GROUP, VERSION, PeerPod, peerpod_manifest

BASE = Path(__file__).resolve().parents[2] / "deploy" / "base"
NAMESPACE = "confidential-containers-system"


def test_crd_matches_the_resource_the_code_uses() -> None:
    crd = yaml.safe_load((BASE / "crd-peerpods.yaml").read_text())
    spec = crd["spec"]
    assert crd["metadata"]["name"] == f"peerpods.{GROUP}"
    assert (spec["group"], spec["scope"], spec["names"]["kind"], spec["names"]["plural"]) == \
        (GROUP, "Namespaced", "PeerPod", "peerpods")
    assert PeerPod._api_info.plural == "peerpods"
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == (VERSION, True, True)
    assert version["subresources"] == {"status": {}}
    schema = version["schema"]["openAPIV3Schema"]["properties"]
    assert schema["spec"]["properties"] == {"cloudProvider": {"type": "string"},
                                            "instanceID": {"type": "string"}}
    assert schema["status"]["properties"] == {"cleand": {"type": "boolean"}}


def test_service_accounts() -> None:
    docs = [d for name in ("rbac.yaml", "serviceaccount-peerpod-ctrl.yaml")
            for d in yaml.safe_load_all((BASE / name).read_text()) if d]
    accounts = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceAccount"}
    assert set(accounts) == {"cloud-api-adaptor", "peerpod-ctrl"}
    assert {a["metadata"]["namespace"] for a in accounts.values()} == {NAMESPACE}
    assert all(a.get("automountServiceAccountToken", True) for a in accounts.values())
    bindings = [d for d in docs if d["kind"] == "ClusterRoleBinding"]
    assert {s["name"] for b in bindings for s in b["subjects"]} == set(accounts)
    assert all(s["namespace"] == NAMESPACE for b in bindings for s in b["subjects"])


def test_the_peerpods_the_adaptor_creates_fit_the_crd() -> None:
    crd = yaml.safe_load((BASE / "crd-peerpods.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    manifest = peerpod_manifest(name="web-resource-ab12c", namespace="prod", pod_name="web",
                                pod_uid="0f0e", cloud_provider="gcp", instance_id="i-1")
    jsonschema.Draft7Validator(schema).validate(manifest)
    manifest["spec"]["instanceID"] = 7
    assert not jsonschema.Draft7Validator(schema).is_valid(manifest)
