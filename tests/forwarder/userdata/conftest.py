"""Fixtures for process-user-data tests: loopback metadata servers and a sandboxed config."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from forwarder.userdata.config import ProvisionConfig

# Port 9 (discard) on loopback: nothing listens there, so a stray request fails fast and
# never leaves the machine.
UNUSED_URL = "http://127.0.0.1:9"

Serve = Callable[[web.Application], Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start an aiohttp application on 127.0.0.1 and return its base URL."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[-1][1]
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
def config(tmp_path: Path) -> ProvisionConfig:
    """A config that touches only tmp_path and loopback; no TPM; fast retries."""
    dmi = tmp_path / "dmi"
    dmi.mkdir()
    return ProvisionConfig(
        peerpod_dir=tmp_path / "run" / "peerpod",
        cidata_dir=tmp_path / "cidata",
        dmi_dir=dmi,
        aws_imds_url=UNUSED_URL,
        azure_imds_url=UNUSED_URL,
        gcp_metadata_url=UNUSED_URL,
        alibaba_metadata_url=UNUSED_URL,
        fetch_timeout=5.0,
        retry_delay=0.05,
        tpm_device=None,
        pcrextend_command="tpm2_pcrextend",
    )


def with_dmi(config: ProvisionConfig, **values: str) -> ProvisionConfig:
    """Write DMI strings (``sys_vendor=...``) into the config's DMI dir."""
    for key, value in values.items():
        (config.dmi_dir / key).write_text(value + "\n")
    return config


def with_cidata(config: ProvisionConfig, user_data: str | bytes) -> ProvisionConfig:
    config.cidata_dir.mkdir(parents=True, exist_ok=True)
    path = config.cidata_dir / "user-data"
    if isinstance(user_data, str):
        user_data = user_data.encode()
    path.write_bytes(user_data)
    return config
