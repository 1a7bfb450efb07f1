"""deploy/base/crd-peerpods.yaml defines the resource the code uses, with upstream's schema
(``src/peerpod-ctrl/chart/crds/confidentialcontainers.org_peerpods.yaml``), and
deploy/base/rbac.yaml names the ServiceAccounts the workloads run as; peerpod-ctrl's
Deployment runs it with leader election, granted its Lease in the namespace it runs in."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import yaml

from k8s.ctrl_main import CtrlSettings
from k8s.objects import GROUP, VERSION, PeerPod, peerpod_manifest
from runtime.settings import parse_settings

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


def test_peerpod_ctrl_runs_elected_with_its_lease_granted_where_it_runs() -> None:
    deployment = yaml.safe_load((BASE / "peerpod-ctrl.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    settings = parse_settings(CtrlSettings, container["args"], {})
    assert settings.leader_elect
    probe = container["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    assert settings.health_probe_bind_address == f":{probe['port']}"
    # /readyz is 503 on a standby: as a readiness probe it would hold rolling updates
    assert "readinessProbe" not in container
    docs = [d for d in yaml.safe_load_all((BASE / "rbac.yaml").read_text()) if d]
    roles = [d for d in docs if d["kind"] == "Role"
             and any("leases" in r["resources"] for r in d["rules"])]
    assert [r["metadata"]["namespace"] for r in roles] == [deployment["metadata"]["namespace"]]
    (binding,) = [d for d in docs if d["kind"] == "RoleBinding"
                  and d["roleRef"]["name"] == roles[0]["metadata"]["name"]]
    assert binding["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": pod["serviceAccountName"],
                                    "namespace": deployment["metadata"]["namespace"]}]
