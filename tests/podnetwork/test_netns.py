"""Netlink sockets in another namespace, without a forked helper that could signal us."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from podnetwork.netns import iproute

pytestmark = [pytest.mark.root, pytest.mark.netns]


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"pp-t-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(
        ["ip", "-n", name, "link", "add", "probe0", "type", "veth", "peer", "probe1"], check=True
    )
    try:
        yield f"/run/netns/{name}"
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_sees_the_namespace_links_and_not_ours(namespace: str) -> None:
    with iproute(namespace) as ipr:
        names = {link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
    assert {"lo", "probe0", "probe1"} <= names
    with iproute() as ipr:
        ours = {link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
    assert "probe0" not in ours
    # the calling thread is back in its own namespace
    assert os.readlink("/proc/thread-self/ns/net") == os.readlink("/proc/self/ns/net")


async def test_daemon_signal_handler_is_not_triggered(namespace: str) -> None:
    """pyroute2's NetNS forks and SIGTERMs a helper that shares asyncio's wake-up fd."""
    received = asyncio.Event()
    barrier = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, received.set)
    loop.add_signal_handler(signal.SIGUSR1, barrier.set)
    try:

        def open_and_list() -> int:
            with iproute(namespace) as ipr:
                return len(ipr.get_links())

        for _ in range(10):
            assert await asyncio.to_thread(open_and_list) >= 3
        # Signals reach the loop in the order they were raised: once our own SIGUSR1 has
        # been handled, a SIGTERM raised before it would have been handled too.
        os.kill(os.getpid(), signal.SIGUSR1)
        async with asyncio.timeout(10):
            await barrier.wait()
        assert not received.is_set()
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        loop.remove_signal_handler(signal.SIGUSR1)
