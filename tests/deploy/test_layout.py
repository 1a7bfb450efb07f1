"""What the manifests must say: upstream's names and policies (UPSTREAM-CAA.md §8), one
overlay per provider whose settings are real settings, and parts that refer to each other
by the same names."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from typing import Any

import pytest

from adaptor.config import AdaptorSettings
from providers import registry
from tests.deploy.render import (
    DEPLOY,
    NAMESPACE,
    OVERLAYS,
    ROOT,
    WEBHOOK_NAMESPACE,
    Doc,
    only,
    pod_spec,
    rendered,
)
from webhook.config import CERT_DIR, WebhookSettings
from webhook.mutate import DEFAULT_EXTENDED_RESOURCE
from webhook.server import MUTATE_PATH

ADAPTOR_IMAGE = "peerpods/cloud-api-adaptor:latest"
CTRL_IMAGE = "peerpods/peerpods-ctrl:latest"
WEBHOOK = "peer-pods-webhook-controller-manager"
KEY_LINE = re.compile(r"^\s*#?\s*([A-Z][A-Z0-9_]+):", re.MULTILINE)


def envs(cls: type, *, secret: bool | None = None) -> set[str]:
    out = set()
    for f in dataclasses.fields(cls):
        spec = f.metadata.get("setting")
        if spec is not None and spec.env and (secret is None or spec.secret == secret):
            out.add(spec.env)
    return out


def container(doc: Doc, name: str) -> dict[str, Any]:
    return next(c for c in pod_spec(doc)["containers"] if c["name"] == name)


def scripts() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return dict(project["scripts"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_configures_its_provider_with_real_settings(overlay: str) -> None:
    settings = registry.load(overlay).Settings
    cm = only(rendered(overlay), "ConfigMap", "peer-pods-cm")
    assert cm["metadata"]["namespace"] == NAMESPACE
    assert cm["data"]["CLOUD_PROVIDER"] == overlay
    known = envs(AdaptorSettings) | envs(settings) | {"CLOUD_PROVIDER"}
    text = (DEPLOY / "overlays" / overlay / "peer-pods-cm.yaml").read_text()
    written = set(KEY_LINE.findall(text))  # set and commented-out keys alike
    assert written <= known, f"unknown settings: {written - known}"
    assert set(cm["data"]) <= known
    required = {spec.env for f in dataclasses.fields(settings)
                if (spec := f.metadata.get("setting")) and spec.required and spec.env}
    assert required <= set(cm["data"]), f"required settings missing: {required - set(cm['data'])}"
    assert all(isinstance(v, str) for v in cm["data"].values())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_documents_its_secret_keys_without_values(overlay: str) -> None:
    secret = only(rendered(overlay), "Secret", "peer-pods-secret")
    assert secret["metadata"]["namespace"] == NAMESPACE
    assert not secret.get("data") and not secret.get("stringData")  # placeholders only
    text = (DEPLOY / "overlays" / overlay / "peer-pods-secret.yaml").read_text()
    documented = set(KEY_LINE.findall(text))
    assert documented == envs(registry.load(overlay).Settings, secret=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_daemonset_as_upstream(overlay: str) -> None:
    ds = only(rendered(overlay), "DaemonSet", "cloud-api-adaptor-daemonset")
    assert ds["spec"]["updateStrategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    pod = pod_spec(ds)
    assert pod["hostNetwork"] is True and pod["serviceAccountName"] == "cloud-api-adaptor"
    con = container(ds, "cloud-api-adaptor-con")
    assert con["image"] == ADAPTOR_IMAGE
    assert con["command"][0] in scripts() or con["command"][0].endswith("entrypoint.sh")
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in con["env"]}
    assert env == {"NODE_NAME": "spec.nodeName", "POD_UID": "metadata.uid"}
    assert con["envFrom"] == [{"secretRef": {"name": "peer-pods-secret"}},
                              {"configMapRef": {"name": "peer-pods-cm"}}]
    assert "privileged" not in con["securityContext"]
    assert con["securityContext"]["capabilities"]["add"] == ["NET_ADMIN", "SYS_ADMIN"]
    assert con["startupProbe"]["httpGet"] == {"host": "127.0.0.1", "path": "/startup",
                                              "port": 8000}
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in con["volumeMounts"]}
    host = {path: v["hostPath"] for path, v in mounts.items() if "hostPath" in v}
    assert {p: h["path"] for p, h in host.items()} == {
        "/run/peerpod": "/run/peerpod", "/run/netns": "/run/netns",
        "/run/xtables.lock": "/run/xtables.lock", "/lib/modules": "/lib/modules",
        "/run/kata-containers/shared/direct-volumes":
            "/run/kata-containers/shared/direct-volumes"}
    assert host["/run/xtables.lock"]["type"] == "FileOrCreate"
    assert host["/run/kata-containers/shared/direct-volumes"]["type"] == "DirectoryOrCreate"
    netns = next(m for m in con["volumeMounts"] if m["mountPath"] == "/run/netns")
    assert netns["mountPropagation"] == "HostToContainer"
    ssh = mounts.get("/root/.ssh/")
    if overlay == "libvirt":  # qemu+ssh:// needs the key, as upstream mounts it
        assert ssh == {"name": "ssh", "secret": {"secretName": "ssh-key-secret",
                                                 "defaultMode": 0o600, "optional": True}}
    else:
        assert ssh is None


def test_peerpod_ctrl() -> None:
    docs = rendered("aws")
    ctrl = only(docs, "Deployment", "peerpodctrl-controller-manager")
    assert ctrl["metadata"]["namespace"] == NAMESPACE
    assert pod_spec(ctrl)["serviceAccountName"] == "peerpod-ctrl"
    only(docs, "ServiceAccount", "peerpod-ctrl")
    con = container(ctrl, "manager")
    assert con["image"] == CTRL_IMAGE and con["command"] == ["peerpod-ctrl"]
    assert {"secretRef": {"name": "peer-pods-secret", "optional": True}} in con["envFrom"]
    assert {"configMapRef": {"name": "peer-pods-cm", "optional": True}} in con["envFrom"]
    assert con["env"][0]["name"] == "PEERPODS_NAMESPACE"


def test_webhook_as_upstream() -> None:
    docs = rendered("aws")
    config = only(docs, "MutatingWebhookConfiguration",
                  "peer-pods-webhook-mutating-webhook-configuration")
    [hook] = config["webhooks"]
    assert hook["name"] == "mwebhook.peerpods.io"
    assert (hook["failurePolicy"], hook["reinvocationPolicy"], hook["sideEffects"]) == (
        "Fail", "IfNeeded", "None")
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["rules"] == [{"apiGroups": [""], "apiVersions": ["v1"],
                              "operations": ["CREATE"], "resources": ["pods"],
                              "scope": "Namespaced"}]
    assert hook["namespaceSelector"]["matchExpressions"] == [{
        "key": "kubernetes.io/metadata.name", "operator": "NotIn",
        "values": [WEBHOOK_NAMESPACE, "kube-system"]}]
    service_ref = hook["clientConfig"]["service"]
    assert service_ref["path"] == MUTATE_PATH
    service = only(docs, "Service", service_ref["name"])
    assert service["metadata"]["namespace"] == service_ref["namespace"] == WEBHOOK_NAMESPACE

    deployment = only(docs, "Deployment", WEBHOOK)
    assert deployment["metadata"]["namespace"] == WEBHOOK_NAMESPACE
    assert deployment["spec"]["replicas"] == 2
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    con = container(deployment, "manager")
    assert con["image"] == CTRL_IMAGE and con["command"] == ["peerpods-webhook"]
    assert scripts()["peerpods-webhook"] == "webhook.__main__:main"
    port = next(p for p in service["spec"]["ports"] if p["port"] == 443)
    named = {p["name"]: p["containerPort"] for p in con["ports"]}
    assert named[port["targetPort"]] == 9443
    env = {e["name"]: e["value"] for e in con["env"]}
    runtime_class = only(docs, "RuntimeClass", env["TARGET_RUNTIMECLASS"])
    assert runtime_class["handler"] == "kata-remote"
    assert runtime_class["overhead"]["podFixed"] == {"memory": "120Mi", "cpu": "250m"}
    assert env["POD_VM_EXTENDED_RESOURCE"] == DEFAULT_EXTENDED_RESOURCE
    assert set(env) <= {spec.env for f in dataclasses.fields(WebhookSettings)
                        if (spec := f.metadata.get("setting")) and spec.env}
    assert con["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert con["readinessProbe"]["httpGet"]["path"] == "/readyz"
    mount = next(m for m in con["volumeMounts"] if m["mountPath"] == CERT_DIR)
    volume = next(v for v in pod_spec(deployment)["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "webhook-server-cert"
    # the restricted Pod Security profile its namespace enforces
    namespace = only(docs, "Namespace", WEBHOOK_NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    pod_security = pod_spec(deployment)["securityContext"]
    assert pod_security["runAsNonRoot"] is True and pod_security["runAsUser"] != 0
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert con["securityContext"]["allowPrivilegeEscalation"] is False
    assert con["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    account = only(docs, "ServiceAccount", pod_spec(deployment)["serviceAccountName"])
    assert account["automountServiceAccountToken"] is False  # it calls no API

    # cert-manager: the certificate names the Service, lands in the mounted secret, and
    # its CA goes into the configuration
    cert = only(docs, "Certificate", "peer-pods-webhook-serving-cert")
    host = f"{service['metadata']['name']}.{WEBHOOK_NAMESPACE}.svc"
    assert cert["spec"]["dnsNames"] == [host, f"{host}.cluster.local"]
    assert cert["spec"]["secretName"] == "webhook-server-cert"
    issuer = only(docs, "Issuer", cert["spec"]["issuerRef"]["name"])
    assert issuer["metadata"]["namespace"] == cert["metadata"]["namespace"]
    assert config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        f"{WEBHOOK_NAMESPACE}/peer-pods-webhook-serving-cert")


def test_every_object_has_one_identity() -> None:
    for overlay in OVERLAYS:
        docs = rendered(overlay)
        ids = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs]
        assert len(ids) == len(set(ids))
        for doc in docs:
            namespace = doc["metadata"].get("namespace")
            assert namespace in (None, NAMESPACE, WEBHOOK_NAMESPACE)


def test_readme_documents_the_deploy_command() -> None:
    readme = (ROOT / "README.md").read_text()
    for overlay in OVERLAYS:
        assert f"deploy/overlays/{overlay}" in readme
    assert "kubectl apply -k deploy/overlays/<provider>" in readme
    assert "deploy/webhook-certs.sh" in readme
    missing = [e for e in envs(WebhookSettings) if f"`{e}`" not in readme]
    assert not missing, missing
