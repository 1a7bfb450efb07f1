"""VXLAN id allocation: the lowest free id at or above the minimum, re-seedable after restart.

Upstream counts up forever from the minimum and forgets on restart; here an id is held by
its sandbox until released, and :meth:`VxlanIdAllocator.restore` re-marks the ids of
sandboxes reloaded from the state store, so a restarted adaptor never hands out an id that
a running pod still uses.
"""

from __future__ import annotations

import threading

from podnetwork.errors import PodNetworkError

MAX_VXLAN_ID = (1 << 24) - 1


class VxlanIdExhausted(PodNetworkError):
    """Every id between the minimum and 2^24-1 is in use."""


class VxlanIdAllocator:
    def __init__(self, min_id: int) -> None:
        if not 0 < min_id <= MAX_VXLAN_ID:
            raise ValueError(f"vxlan minimum id {min_id} is out of range 1..{MAX_VXLAN_ID}")
        self.min_id = min_id
        self._by_sandbox: dict[str, int] = {}
        self._lock = threading.Lock()

    def allocate(self, sandbox_id: str) -> int:
        """The sandbox's id; a new sandbox gets the lowest id no live sandbox uses."""
        with self._lock:
            held = self._by_sandbox.get(sandbox_id)
            if held is not None:
                return held
            used = set(self._by_sandbox.values())
            candidate = self.min_id
            while candidate in used:
                candidate += 1
            if candidate > MAX_VXLAN_ID:
                raise VxlanIdExhausted(f"no free vxlan id at or above {self.min_id}")
            self._by_sandbox[sandbox_id] = candidate
            return candidate

    def restore(self, sandbox_id: str, vxlan_id: int) -> None:
        """Mark ``vxlan_id`` as held by ``sandbox_id`` (after a restart)."""
        if not 0 < vxlan_id <= MAX_VXLAN_ID:
            raise ValueError(f"vxlan id {vxlan_id} is out of range 1..{MAX_VXLAN_ID}")
        with self._lock:
            for other, held in self._by_sandbox.items():
                if held == vxlan_id and other != sandbox_id:
                    raise ValueError(
                        f"vxlan id {vxlan_id} of sandbox {sandbox_id} is already held by"
                        f" sandbox {other}"
                    )
            self._by_sandbox[sandbox_id] = vxlan_id

    def release(self, sandbox_id: str) -> None:
        with self._lock:
            self._by_sandbox.pop(sandbox_id, None)

    def in_use(self) -> dict[str, int]:
        with self._lock:
            return dict(self._by_sandbox)
