"""Fixtures for the adaptor tests: a fake cloud, the daemon on real unix sockets, a shim."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import pytest

from adaptor.config import AdaptorSettings
from adaptor.manager import RetryPolicy
from adaptor.server import Daemon
from providers.fake import Faults
from tests.adaptor.shim import Shim
from tests.fakes.cloud import FakeCloud
from tests.fakes.network import FakeWorkerNetwork


@pytest.fixture
def short_dir() -> Iterator[str]:
    """A short directory: unix socket paths must stay under 108 bytes."""
    path = tempfile.mkdtemp(prefix="pp", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def faults() -> Faults:
    return Faults()


@pytest.fixture
async def cloud(short_dir: str, faults: Faults) -> AsyncIterator[FakeCloud]:
    fake = FakeCloud(short_dir, faults=faults)
    yield fake
    await fake.aclose()


def make_settings(short_dir: str, port: int, **overrides: object) -> AdaptorSettings:
    values: dict[str, object] = {
        "socket": f"{short_dir}/hv.sock",
        "pods_dir": f"{short_dir}/p",
        "forwarder_port": port,
        "proxy_timeout": timedelta(seconds=5),
        "tunnel_type": "none",
        "node_name": "node-1",
        "probe_port": 0,
    }
    values.update(overrides)
    return AdaptorSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(short_dir: str, cloud: FakeCloud) -> AdaptorSettings:
    return make_settings(short_dir, cloud.port)


FAST_RETRY = RetryPolicy(attempts=3, initial_delay=0.01, max_delay=0.05)


@pytest.fixture
def network() -> FakeWorkerNetwork:
    return FakeWorkerNetwork()


@pytest.fixture
async def daemon(
    settings: AdaptorSettings, cloud: FakeCloud, network: FakeWorkerNetwork
) -> AsyncIterator[Daemon]:
    instance = Daemon(settings, cloud.provider, network=network, delete_retry=FAST_RETRY)
    await instance.start()
    yield instance
    await instance.aclose()


@pytest.fixture
def shim(settings: AdaptorSettings) -> Shim:
    return Shim(settings.socket)
