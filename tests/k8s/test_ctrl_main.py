"""The ``peerpod-ctrl`` program: settings, refusal without Kubernetes access, its health
endpoints (upstream: ``src/peerpod-ctrl/main.go``, health on :8081 ``/healthz``, ``/readyz``),
and a provider built from the environment as ``cloud-api-adaptor`` builds it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from k8s.access import make_client
from k8s.controller import PeerPodController
from k8s.ctrl_main import CtrlSettings, main, provider_factory, serve_health
from providers.base import ConfigError
from runtime.settings import flags_of, parse_settings
from tests.fakes.kubeapi import FakeKubeAPI
from tests.k8s.conftest import FAST, target_for


def test_refuses_to_run_without_kubernetes_access() -> None:
    assert main([], {}) == 1
    assert main(["--no-such-flag"], {}) == 2


def test_help_prints_the_flags_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"], {}) == 0
    assert "-health-probe-bind-address" in capsys.readouterr().err
    assert main(["-no-such-flag"], {}) == 2


def test_upstream_flags_are_accepted() -> None:
    settings = parse_settings(CtrlSettings, ["--leader-elect", "--health-probe-bind-address",
                                             ":9090", "--metrics-bind-address",
                                             "127.0.0.1:8080"], {})
    assert settings.leader_elect and settings.health_probe_bind_address == ":9090"


def test_unknown_or_misconfigured_provider_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        provider_factory({})("no-such-cloud")


async def get(port: int, path: str) -> int:
    async with aiohttp.ClientSession() as session, \
            session.get(f"http://127.0.0.1:{port}{path}") as response:
        return response.status


async def test_health_and_readiness(kubeapi: FakeKubeAPI, tmp_path: Path) -> None:
    client = make_client(target_for(kubeapi, tmp_path, "ctrl-token"), field_manager="test")
    ctrl = PeerPodController(client, provider_factory({}), backoff=FAST)
    runner = await serve_health(ctrl, "127.0.0.1:0")
    port = runner.addresses[0][1]
    try:
        assert await get(port, "/healthz") == 200
        assert await get(port, "/readyz") == 503
        task = asyncio.create_task(ctrl.run())
        await ctrl.watching.wait()
        assert await get(port, "/readyz") == 200
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    finally:
        await runner.cleanup()
        await ctrl.aclose()
        await client.close()


def test_readme_documents_every_flag() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    flags = [name for flag in flags_of(CtrlSettings) for name in flag.names]
    assert "leader-elect" in flags
    missing = [name for name in flags if f"`--{name}`" not in readme]
    assert not missing, missing
    assert "--leader-elect` is accepted and ignored" not in readme
