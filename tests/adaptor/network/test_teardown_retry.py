"""A worker-side teardown that fails half-way reports it, and a second one finishes the job.

The failures are real ones: the pod netns path stops being a namespace for a while (its
mount is moved aside, as when a runtime is half-way through removing it), and an unrelated
iptables rule jumps to ``peerpod-PREROUTING``, so the kernel refuses to delete that chain.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address

import pytest

from adaptor.network import PodNetworkError, make_worker_network
from tests.netns import Netns, NetnsPool, build_worker_topology, sh

pytestmark = [pytest.mark.root, pytest.mark.netns]

FOREIGN_JUMP = ("PREROUTING", "-p", "tcp", "-j", "peerpod-PREROUTING")


@contextmanager
def netns_unreachable(pool: NetnsPool, ns: Netns) -> Iterator[None]:
    """While inside, ``ns.path`` is an empty file, not a namespace; the namespace itself
    lives on under another name and is put back on exit."""
    held = pool.adopt("held")
    open(held.path, "w").close()
    sh(["mount", "--bind", ns.path, held.path])
    sh(["umount", ns.path])
    try:
        yield
    finally:
        sh(["mount", "--bind", held.path, ns.path])
        sh(["umount", held.path])
        sh(["rm", "-f", held.path])


def raw_rules(ns: Netns) -> str:
    return ns.run(["iptables", "-t", "raw", "-S"])


async def test_failed_teardown_is_reported_and_a_second_one_finishes(
    netns_pool: NetnsPool,
) -> None:
    topo = build_worker_topology(netns_pool, pods=1)
    slot = topo.pods[0]
    wn = make_worker_network("vxlan", host_netns=topo.worker.path)
    network = await wn.inspect("sb", slot.pod.path)
    await wn.setup("sb", slot.pod.path, network, [IPv4Address(slot.vm_ip)])
    topo.worker.run(["iptables", "-t", "raw", "-A", *FOREIGN_JUMP])

    with netns_unreachable(netns_pool, slot.pod), pytest.raises(PodNetworkError) as info:
        await wn.teardown("sb", slot.pod.path, network)
    text = str(info.value)
    assert f"cannot open network namespace {slot.pod.path}" in text
    assert "-X peerpod-PREROUTING" in text and "Device or resource busy" in text
    # half-way: the OUTPUT rule went, the tunnel device, its redirect and a chain are left
    assert "vxlan id 555000" in slot.pod.ip("-d", "link", "show", "vxlan1")
    assert "mirred" in slot.pod.run(["tc", "filter", "show", "dev", "eth0", "ingress"])
    rules = raw_rules(topo.worker)
    assert "peerpod-OUTPUT" not in rules and "-N peerpod-PREROUTING" in rules

    topo.worker.run(["iptables", "-t", "raw", "-D", *FOREIGN_JUMP])
    await wn.teardown("sb", slot.pod.path, network)  # the retry

    assert "vxlan" not in slot.pod.ip("-d", "link", "show")
    assert "vxlan" not in topo.worker.ip("-d", "link", "show")
    assert not slot.pod.run(["tc", "filter", "show", "dev", "eth0", "ingress"]).strip()
    assert "ingress" not in slot.pod.run(["tc", "qdisc", "show", "dev", "eth0"])
    assert "peerpod" not in raw_rules(topo.worker)
    await wn.teardown("sb", slot.pod.path, network)  # and once more: nothing left to do


async def test_a_failed_iptables_listing_is_not_taken_for_a_missing_chain(
    netns_pool: NetnsPool,
) -> None:
    """The worker namespace cannot be entered: teardown must fail, not report success."""
    topo = build_worker_topology(netns_pool, pods=1)
    slot = topo.pods[0]
    wn = make_worker_network("vxlan", host_netns=topo.worker.path)
    network = await wn.inspect("sb", slot.pod.path)
    await wn.setup("sb", slot.pod.path, network, [IPv4Address(slot.vm_ip)])
    with netns_unreachable(netns_pool, topo.worker), pytest.raises(PodNetworkError) as info:
        await wn.teardown("sb", slot.pod.path, network)
    assert "iptables -w -t raw -S" in str(info.value)
    assert "vni:555000" in raw_rules(topo.worker)
    assert "vxlan" not in slot.pod.ip("-d", "link", "show")  # the pod side went meanwhile
    await wn.teardown("sb", slot.pod.path, network)
    assert "peerpod" not in raw_rules(topo.worker)
