"""Azure settings: upstream names and defaults, env then flag, secrets kept out of output."""

from __future__ import annotations

import pytest

from providers import registry
from providers.azure import Settings
from providers.azure.settings import AzureSettings
from runtime.settings import SettingsError, describe, parse_settings

REQUIRED = {
    "AZURE_SUBSCRIPTION_ID": "sub-1",
    "AZURE_REGION": "eastus",
    "AZURE_RESOURCE_GROUP": "rg",
    "AZURE_SUBNET_ID": "/subscriptions/sub-1/resourceGroups/rg/providers/"
                       "Microsoft.Network/virtualNetworks/v/subnets/s",
    "AZURE_IMAGE_ID": "/CommunityGalleries/g/Images/i/Versions/1",
}


def test_registered_and_lazy() -> None:
    assert "azure" in registry.names()
    assert registry.load("azure").Settings is AzureSettings is Settings


def test_defaults_follow_upstream() -> None:
    s = parse_settings(AzureSettings, [], REQUIRED)
    assert s.instance_size == "Standard_DC2as_v5"
    assert s.instance_sizes == ()
    assert s.ssh_username == "peerpod"
    assert s.ssh_key_path == ""
    assert s.disable_cvm is False and s.enable_secure_boot is False
    assert s.use_public_ip is False
    assert s.root_volume_size == 0
    assert s.extra_tags == {}
    assert s.nsg_id == "" and s.zone == ""
    assert s.arm_endpoint == ""


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_required(missing: str) -> None:
    env = {k: v for k, v in REQUIRED.items() if k != missing}
    with pytest.raises(SettingsError, match=missing):
        parse_settings(AzureSettings, [], env)


def test_env_names_and_flags() -> None:
    env = {
        **REQUIRED,
        "AZURE_CLIENT_ID": "cid", "AZURE_CLIENT_SECRET": "very-secret", "AZURE_TENANT_ID": "t",
        "AZURE_INSTANCE_SIZE": "Standard_DC4as_v5",
        "AZURE_INSTANCE_SIZES": "Standard_DC2as_v5,Standard_DC4as_v5",
        "AZURE_NSG_ID": "nsg", "SSH_USERNAME": "core", "DISABLECVM": "true",
        "ENABLE_SECURE_BOOT": "true", "USE_PUBLIC_IP": "true", "ROOT_VOLUME_SIZE": "20",
        "TAGS": "team=a,cost=b",
    }
    s = parse_settings(AzureSettings, ["-zone", "2", "-ssh-key-path", "/k.pub",
                                       "-region", "westeurope"], env)
    assert (s.client_id, s.client_secret, s.tenant_id) == ("cid", "very-secret", "t")
    assert s.region == "westeurope"  # the flag wins over the env
    assert s.instance_size == "Standard_DC4as_v5"
    assert s.instance_sizes == ("Standard_DC2as_v5", "Standard_DC4as_v5")
    assert (s.nsg_id, s.ssh_username, s.zone, s.ssh_key_path) == ("nsg", "core", "2", "/k.pub")
    assert s.disable_cvm and s.enable_secure_boot and s.use_public_ip
    assert s.root_volume_size == 20
    assert dict(s.extra_tags) == {"team": "a", "cost": "b"}
    shown = str(describe(s))
    assert "very-secret" not in shown and "cid" not in shown
