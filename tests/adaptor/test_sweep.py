"""The orphan sweep: what it deletes, what it never touches, and the retried deletes."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta

import pytest

from adaptor.sandbox import SandboxState
from adaptor.server import Daemon
from providers.base import NODE_TAG, SANDBOX_TAG, Instance
from tests.adaptor.conftest import FAST_RETRY, make_settings
from tests.adaptor.helpers import expect_error
from tests.adaptor.shim import Shim
from tests.fakes.cloud import FakeCloud
from tests.fakes.network import FakeWorkerNetwork

NOW = datetime.now(UTC)
OLD = NOW - timedelta(hours=1)


def leaked(instance_id: str, created_at: datetime | None, **tags: str) -> Instance:
    return Instance(id=instance_id, name=f"podvm-{instance_id}", tags=tags,
                    created_at=created_at)


@pytest.fixture
async def sweeping(
    short_dir: str, cloud: FakeCloud, network: FakeWorkerNetwork
) -> AsyncIterator[Daemon]:
    settings = make_settings(short_dir, cloud.port, orphan_grace_period=timedelta(minutes=15))
    async with Daemon(settings, cloud.provider, network=network,
                      delete_retry=FAST_RETRY) as daemon:
        yield daemon


def sweeps_deleted(daemon: Daemon) -> float:
    value = daemon.metrics.registry.get_sample_value("peerpods_orphan_sweep_deletions_total")
    return value or 0.0


async def test_sweep_deletes_only_old_orphans_of_this_node(
    sweeping: Daemon, cloud: FakeCloud
) -> None:
    shim = Shim(sweeping.settings.socket)
    await shim.create_vm("sb-live")
    await shim.start_vm("sb-live")
    live = cloud.provider.created[0]
    node = {NODE_TAG: "node-1"}
    for instance in (
        leaked("i-orphan", OLD, **node, **{SANDBOX_TAG: "sb-gone"}),
        leaked("i-noage", None, **node),  # the cloud does not say how old: counts as old
        leaked("i-dup", OLD, **node, **{SANDBOX_TAG: "sb-live"}),  # record names another
        leaked("i-young", NOW - timedelta(minutes=1), **node, **{SANDBOX_TAG: "sb-new"}),
        leaked("i-other-node", OLD, **{NODE_TAG: "node-2", SANDBOX_TAG: "sb-x"}),
        leaked("i-other-cluster", OLD),
    ):
        cloud.provider.add_instance(instance)
    assert sweeping.sweeper is not None
    result = await sweeping.sweeper.sweep()
    assert sorted(result.deleted) == ["i-dup", "i-noage", "i-orphan"]
    assert result.too_young == ("i-young",)
    assert sorted(cloud.provider.instances) == sorted(
        [live, "i-young", "i-other-node", "i-other-cluster"])
    assert sweeps_deleted(sweeping) == 3
    # A provider that ignores the tag filter still cannot make it touch other nodes.
    everything = cloud.provider.instances

    async def list_all(tags: Mapping[str, str]) -> list[Instance]:
        return list(everything.values())

    cloud.provider.list_instances = list_all  # type: ignore[method-assign]
    result = await sweeping.sweeper.sweep()
    assert result.deleted == ()
    assert "i-other-node" in cloud.provider.instances
    assert "i-other-cluster" in cloud.provider.instances


async def test_sweep_retries_a_failed_delete(sweeping: Daemon, cloud: FakeCloud) -> None:
    shim = Shim(sweeping.settings.socket)
    await shim.create_vm("sb-stuck")
    await shim.start_vm("sb-stuck")
    cloud.provider.faults.fail_delete_times = 100
    await expect_error(shim.stop_vm("sb-stuck"))
    record_path = os.path.join(sweeping.settings.pods_dir, "sb-stuck", "sandbox.json")
    manager = sweeping.manager
    assert manager is not None
    record = manager.record("sb-stuck")
    assert record is not None and record.state is SandboxState.STOP_FAILED
    assert os.path.exists(record_path)  # noqa: ASYNC240
    assert sweeping.sweeper is not None
    # Still failing: the record stays for the next sweep.
    cloud.provider.faults.fail_delete_times = 100
    assert (await sweeping.sweeper.sweep()).stops_retried == ()
    assert manager.record("sb-stuck") is not None
    cloud.provider.faults.fail_delete_times = 0
    result = await sweeping.sweeper.sweep()
    assert result.stops_retried == ("sb-stuck",)
    assert cloud.provider.instances == {}
    assert manager.record("sb-stuck") is None and not os.path.exists(record_path)  # noqa: ASYNC240


async def test_no_sweep_once_another_adaptor_owns_the_socket(
    sweeping: Daemon, cloud: FakeCloud
) -> None:
    cloud.provider.add_instance(leaked("i-orphan", OLD, **{NODE_TAG: "node-1"}))
    # A newer adaptor takes the hypervisor socket over (unlink + bind).
    path = sweeping.settings.socket
    os.unlink(path)
    with socket.socket(socket.AF_UNIX) as newer:
        newer.bind(path)
        assert sweeping.sweeper is not None
        result = await sweeping.sweeper.sweep()
        assert result.skipped and "i-orphan" in cloud.provider.instances
        await sweeping.aclose()
        assert os.path.exists(path)  # noqa: ASYNC240
