"""Upstream settings the adaptor accepts under upstream's names and defaults, and the one it
refuses at startup rather than ignore."""

from __future__ import annotations

import pytest

from adaptor.cli import RunCommand, parse_command
from adaptor.config import AdaptorSettings
from adaptor.server import StartupError, prepare
from providers import fake as fake_provider
from tests.adaptor.conftest import make_settings


def settings_from(env: dict[str, str]) -> AdaptorSettings:
    command = parse_command(["fake"], env, lambda name: fake_provider)
    assert isinstance(command, RunCommand)
    return command.settings


def test_runtimeclass_name_default_is_upstreams() -> None:
    # Upstream: pkg/probe/checker.go, GetRuntimeclassName: RUNTIMECLASS_NAME, else
    # DefaultCCRuntimeClassName = "kata-remote" (pkg/probe/probe.go).
    assert settings_from({}).runtimeclass_name == "kata-remote"
    assert settings_from({"RUNTIMECLASS_NAME": "kata-x"}).runtimeclass_name == "kata-x"
    assert settings_from({"RUNTIMECLASS_NAME": ""}).runtimeclass_name == "kata-remote"


def test_external_plugin_settings_are_accepted_while_disabled(short_dir: str) -> None:
    # Upstream: cloud-providers/table.go, LoadCloudProvider reads these three env vars and
    # skips plugin loading unless ENABLE_CLOUD_PROVIDER_EXTERNAL_PLUGIN is "true"
    # (entrypoint.sh defaults it to false).
    env = {"ENABLE_CLOUD_PROVIDER_EXTERNAL_PLUGIN": "false",
           "CLOUD_PROVIDER_EXTERNAL_PLUGIN_PATH": "/plugins/fake.so",
           "CLOUD_PROVIDER_EXTERNAL_PLUGIN_HASH": "ab" * 32}
    settings = settings_from(env)
    assert settings.enable_cloud_provider_external_plugin is False
    assert settings.cloud_provider_external_plugin_path == "/plugins/fake.so"
    assert settings.cloud_provider_external_plugin_hash == "ab" * 32
    assert settings_from({}).enable_cloud_provider_external_plugin is False
    prepare(make_settings(short_dir, 15150))  # disabled: starts


def test_enabled_external_plugin_is_refused_at_startup(short_dir: str) -> None:
    # Upstream would plugin.Open() the .so; a Python adaptor cannot, and must not silently
    # run its built-in provider instead.
    assert settings_from({"ENABLE_CLOUD_PROVIDER_EXTERNAL_PLUGIN": "true"}) \
        .enable_cloud_provider_external_plugin is True
    settings = make_settings(short_dir, 15150, enable_cloud_provider_external_plugin=True,
                             cloud_provider_external_plugin_path="/plugins/fake.so")
    with pytest.raises(StartupError, match=r"^ENABLE_CLOUD_PROVIDER_EXTERNAL_PLUGIN is true, "
                       r"but external cloud-provider plugins \(Go \.so files, here "
                       r"/plugins/fake\.so\) are not supported"):
        prepare(settings)
