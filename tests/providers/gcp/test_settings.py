"""GCP settings (upstream names and defaults, secrets out of output) and the pure builders."""

from __future__ import annotations

import pytest

from providers import registry
from providers.gcp import Settings
from providers.gcp.body import image_ref, label_filter, label_value, source_image
from providers.gcp.settings import GcpSettings
from runtime.settings import SettingsError, describe, parse_settings

REQUIRED = {"GCP_PROJECT_ID": "proj", "GCP_ZONE": "europe-west4-a", "GCP_NETWORK": "default"}


def test_defaults_follow_upstream() -> None:
    s = parse_settings(GcpSettings, [], REQUIRED)
    assert (s.project_id, s.zone, s.network) == ("proj", "europe-west4-a", "default")
    assert s.machine_type == "e2-medium"
    assert s.machine_types == ()
    assert s.disk_type == "pd-standard"
    assert s.root_volume_size == 10
    assert s.disable_cvm is False and s.use_public_ip is False
    assert s.confidential_type == "" and s.image_name == "" and s.subnetwork == ""
    assert s.resource_tags == {}
    assert s.region == "europe-west4"


def test_env_names_and_flags() -> None:
    env = {
        **REQUIRED,
        "PODVM_IMAGE_NAME": "podvm", "GCP_MACHINE_TYPE": "n2d-standard-2",
        "GCP_INSTANCE_TYPES": "n2d-standard-2, n2d-standard-4", "GCP_SUBNETWORK": "sub",
        "GCP_DISK_TYPE": "pd-balanced", "DISABLECVM": "TRUE", "GCP_CONFIDENTIAL_TYPE": "SEV",
        "ROOT_VOLUME_SIZE": "40", "USE_PUBLIC_IP": "1", "TAGS": "env=prod,team=pp",
        "GCP_CREDENTIALS": '{"type": "service_account"}',
    }
    s = parse_settings(GcpSettings, [], env)
    assert s.image_name == "podvm" and s.machine_type == "n2d-standard-2"
    assert s.machine_types == ("n2d-standard-2", "n2d-standard-4")
    assert (s.subnetwork, s.disk_type, s.confidential_type) == ("sub", "pd-balanced", "SEV")
    assert s.disable_cvm is True and s.use_public_ip is True and s.root_volume_size == 40
    assert s.resource_tags == {"env": "prod", "team": "pp"}
    flags = parse_settings(GcpSettings, ["-zone", "us-east1-b", "-machine-types", "c3-standard-4",
                                         "-confidential-type", "TDX", "-disk-type", "pd-ssd",
                                         "-gcp-project-id", "p2", "-network", "n2",
                                         "-image-name", "img", "-subnetwork", "s2"], env)
    assert (flags.zone, flags.project_id, flags.network) == ("us-east1-b", "p2", "n2")
    assert flags.machine_types == ("c3-standard-4",)
    assert (flags.confidential_type, flags.disk_type, flags.image_name) == ("TDX", "pd-ssd", "img")


def test_required_settings() -> None:
    with pytest.raises(SettingsError, match="GCP_PROJECT_ID"):
        parse_settings(GcpSettings, [], {"GCP_ZONE": "z-a", "GCP_NETWORK": "n"})


def test_credentials_are_secret() -> None:
    env = {**REQUIRED, "GCP_CREDENTIALS": '{"private_key": "KEY-abc123"}'}
    shown = describe(parse_settings(GcpSettings, [], env))
    assert "KEY-abc123" not in repr(shown)


def test_registered() -> None:
    assert "gcp" in registry.names()
    assert registry.load("gcp").Settings is Settings


def test_label_values() -> None:
    assert label_value("web-1") == "web-1"
    long = "a" * 64
    encoded = label_value(long)
    assert len(encoded) <= 63 and encoded != label_value("a" * 63 + "b")
    dotted = label_value("Node.Example.COM")
    assert dotted.startswith("node-example-com--") and len(dotted) <= 63
    assert label_filter({"peerpods-pod-name": "web", "peerpods-node": "n1"}) == (
        'labels.peerpods-node="n1" AND labels.peerpods-pod-name="web"')


def test_image_paths() -> None:
    assert source_image("img", "p") == "projects/p/global/images/img"
    assert source_image("/projects/q/global/images/img", "p") == "/projects/q/global/images/img"
    assert image_ref("projects/q/global/images/img", "p") == image_ref("img", "q")
    assert image_ref("https://www.googleapis.com/compute/v1/projects/q/global/images/x",
                     "p").project == "q"
    family = image_ref("projects/q/global/images/family/f", "p")
    assert (family.project, family.name, family.family) == ("q", "f", True)
