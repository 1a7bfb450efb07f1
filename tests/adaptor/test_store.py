"""The state store and the persisted TLS material: private files, atomic writes, corrupt
records set aside, the same CA and client certificate after a restart."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from adaptor.sandbox import SandboxState
from adaptor.server import Daemon
from adaptor.store import SandboxStore
from protocols.ttrpc import Client
from tests.adaptor.conftest import FAST_RETRY, make_settings
from tests.adaptor.shim import Shim
from tests.fakes.cloud import FakeCloud
from tests.fakes.network import FakeWorkerNetwork


def mode(path: str | Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


async def test_records_follow_the_lifecycle_privately(
    daemon: Daemon, cloud: FakeCloud, shim: Shim
) -> None:
    store = SandboxStore(daemon.settings.pods_dir)
    await shim.create_vm("sb-rec")
    path = store.path("sb-rec")
    assert mode(path) == 0o600
    assert mode(os.path.join(daemon.settings.pods_dir, "sb-rec", "apf.json")) == 0o600
    record = store.load("sb-rec")
    assert record is not None and record.state is SandboxState.CREATED
    await shim.start_vm("sb-rec")
    record = store.load("sb-rec")
    assert record is not None and record.state is SandboxState.RUNNING
    assert record.instance_id == cloud.provider.created[0]
    assert not [n for n in os.listdir(os.path.dirname(path)) if ".tmp" in n]
    await shim.stop_vm("sb-rec")
    assert store.load("sb-rec") is None
    assert not os.path.exists(os.path.join(daemon.settings.pods_dir, "sb-rec", "apf.json"))  # noqa: ASYNC240


async def test_tls_material_survives_a_restart(
    short_dir: str, cloud: FakeCloud, network: FakeWorkerNetwork
) -> None:
    settings = make_settings(short_dir, cloud.port)
    tls_dir = Path(short_dir, "adaptor-state", "tls")
    async with Daemon(settings, cloud.provider, network=network, delete_retry=FAST_RETRY):
        files = {name: (tls_dir / name).read_text()
                 for name in ("ca.crt", "ca.key", "client.crt", "client.key")}
        shim = Shim(settings.socket)
        path = await shim.create_vm("sb-tls")
        await shim.start_vm("sb-tls")
    for name in files:
        assert mode(tls_dir / name) == 0o600, name
    # A new process: same CA and client certificate, so the running VM still verifies
    # and still trusts the adaptor.
    async with Daemon(settings, cloud.provider, network=network, delete_retry=FAST_RETRY):
        assert {name: (tls_dir / name).read_text() for name in files} == files
        async with await Client.connect_unix(path) as conn:
            await conn.call_raw("grpc.Health", "Check", b"", timeout=10)
        assert cloud.provider.create_calls == 1


async def test_corrupt_record_is_set_aside(
    short_dir: str, cloud: FakeCloud, network: FakeWorkerNetwork,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings(short_dir, cloud.port)
    async with Daemon(settings, cloud.provider, network=network, delete_retry=FAST_RETRY):
        await Shim(settings.socket).create_vm("sb-good")
    bad = Path(settings.pods_dir, "sb-bad")
    bad.mkdir()  # noqa: ASYNC240
    (bad / "sandbox.json").write_text('{"version": 1, "sandbox_id": ')
    with caplog.at_level(logging.ERROR, logger="adaptor.store"):
        async with Daemon(settings, cloud.provider, network=network,
                          delete_retry=FAST_RETRY) as daemon:
            assert daemon.restored is not None and daemon.restored.corrupt == 1
            assert daemon.manager is not None
            assert [r.sandbox_id for r in daemon.manager.records()] == ["sb-good"]
            assert await Shim(settings.socket).version() == "0.0.0"
    assert not (bad / "sandbox.json").exists()
    kept = [n for n in os.listdir(bad) if n.startswith("sandbox.json.corrupt-")]
    assert len(kept) == 1
    assert any("sb-bad" in r.getMessage() and "unreadable record" in r.getMessage()
               for r in caplog.records)
