"""VXLAN id allocation and its re-seeding after a restart (no namespaces needed)."""

from __future__ import annotations

import pytest

from adaptor.network import VxlanIdAllocator, make_worker_network
from adaptor.network.allocator import MAX_VXLAN_ID, VxlanIdExhausted
from protocols.apf import PodNetwork


def test_lowest_free_id_and_reuse_after_release() -> None:
    alloc = VxlanIdAllocator(555000)
    assert [alloc.allocate(s) for s in ("a", "b", "c")] == [555000, 555001, 555002]
    assert alloc.allocate("b") == 555001  # same sandbox, same id
    alloc.release("b")
    assert alloc.allocate("d") == 555001  # the gap is reused
    assert alloc.allocate("e") == 555003
    alloc.release("unknown")  # forgetting an unknown sandbox is fine


def test_restore_reseeds_after_restart() -> None:
    alloc = VxlanIdAllocator(555000)
    alloc.restore("old-1", 555000)
    alloc.restore("old-2", 555002)
    assert alloc.allocate("new-1") == 555001
    assert alloc.allocate("new-2") == 555003
    assert alloc.in_use() == {
        "old-1": 555000,
        "old-2": 555002,
        "new-1": 555001,
        "new-2": 555003,
    }
    alloc.restore("old-1", 555000)  # restoring the same pair twice is fine
    with pytest.raises(ValueError, match="already held by sandbox old-1"):
        alloc.restore("other", 555000)


def test_exhaustion_and_bad_values() -> None:
    alloc = VxlanIdAllocator(MAX_VXLAN_ID - 1)
    alloc.allocate("a")
    alloc.allocate("b")
    with pytest.raises(VxlanIdExhausted):
        alloc.allocate("c")
    with pytest.raises(ValueError, match="out of range"):
        VxlanIdAllocator(0)
    with pytest.raises(ValueError, match="out of range"):
        alloc.restore("x", MAX_VXLAN_ID + 1)


def test_worker_network_restore_and_release() -> None:
    wn = make_worker_network("vxlan", vxlan_min_id=100)
    wn.restore("s1", PodNetwork(vxlan_id=100, vxlan_port=4789))
    wn.restore("s-none", PodNetwork(tunnel_type="none"))  # no id: nothing to mark
    allocator = wn.allocator  # type: ignore[attr-defined]
    assert allocator.allocate("s2") == 101
    wn.release("s1")
    assert allocator.allocate("s3") == 100


def test_unknown_tunnel_type() -> None:
    with pytest.raises(ValueError, match="unknown tunnel type: 'gre'"):
        make_worker_network("gre")
