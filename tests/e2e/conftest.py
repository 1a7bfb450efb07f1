"""Fixtures of the end-to-end tests: a worker node namespace and the adaptor running in it.

Teardown runs even when a test fails: the adaptor is stopped, whatever pod VMs it left are
killed and their namespaces deleted, then the test's namespaces and directory go.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Adaptor, WorkerNode, destroy_leftovers
from tests.netns import NetnsPool, netns_pool

__all__ = ["adaptor", "e2e_root", "netns_pool", "worker"]


@pytest.fixture
def e2e_root() -> Iterator[Path]:
    # Short on purpose: unix sockets of the pods and the pod VMs live below it.
    path = Path(tempfile.mkdtemp(prefix="ppe2e-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def worker(netns_pool: NetnsPool) -> WorkerNode:
    return WorkerNode(netns_pool)


@pytest.fixture
async def adaptor(
    worker: WorkerNode, e2e_root: Path, netns_pool: NetnsPool
) -> AsyncIterator[Adaptor]:
    """The adaptor for this test (not started: the test starts it, and may restart it)."""
    daemon = Adaptor(worker.ns, e2e_root, node=f"e2e-{netns_pool.prefix}")
    try:
        yield daemon
    finally:
        try:
            await daemon.stop()
        finally:
            destroy_leftovers(daemon)
