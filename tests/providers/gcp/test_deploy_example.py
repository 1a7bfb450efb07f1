"""deploy/overlays/gcp/peer-pods-cm.yaml: every key is a setting, and it configures the gcp
provider as the adaptor would read it from the environment."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from adaptor.config import AdaptorSettings
from providers.gcp.settings import GcpSettings
from runtime.settings import parse_settings

OVERLAY = Path(__file__).resolve().parents[3] / "deploy" / "overlays" / "gcp"


def _envs(cls: type) -> set[str]:
    return {f.metadata["setting"].env for f in dataclasses.fields(cls)
            if "setting" in f.metadata and f.metadata["setting"].env}


def test_example_configmap_is_gcp_settings() -> None:
    docs = [d for name in ("peer-pods-cm.yaml", "peer-pods-secret.yaml")
            for d in yaml.safe_load_all((OVERLAY / name).read_text()) if d]
    [cm] = [d for d in docs if d["kind"] == "ConfigMap"]
    [secret] = [d for d in docs if d["kind"] == "Secret"]
    assert cm["metadata"] == {"name": "peer-pods-cm",
                              "namespace": "confidential-containers-system"}
    assert secret["metadata"]["name"] == "peer-pods-secret"
    data = cm["data"]
    assert data["CLOUD_PROVIDER"] == "gcp"
    unknown = set(data) - _envs(GcpSettings) - _envs(AdaptorSettings) - {"CLOUD_PROVIDER"}
    assert not unknown, unknown
    settings = parse_settings(GcpSettings, [], data)
    assert settings.confidential_type in ("TDX", "SEV", "SEV_SNP")
    assert settings.project_id and settings.zone and settings.network and settings.image_name
