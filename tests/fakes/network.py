"""A worker network that records calls instead of touching network namespaces.

VXLAN ids come from the real allocator, so restore/release behave as in production."""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address

from adaptor.network.allocator import VxlanIdAllocator
from podnetwork.errors import PodNetworkError
from protocols.apf import PodNetwork, Route


class FakeWorkerNetwork:
    def __init__(self, *, fail_setup: bool = False) -> None:
        self.fail_setup = fail_setup
        self.allocator = VxlanIdAllocator(555000)
        self.active: dict[str, tuple[str, ...]] = {}  # sandbox -> VM IPs with a tunnel
        self.calls: list[tuple[str, str]] = []

    @property
    def allocated(self) -> dict[str, int]:
        return self.allocator.in_use()

    async def inspect(self, sandbox_id: str, netns_path: str) -> PodNetwork:
        self.calls.append(("inspect", sandbox_id))
        if not netns_path:
            raise PodNetworkError("empty network namespace path")
        vni = self.allocator.allocate(sandbox_id)
        return PodNetwork(
            tunnel_type="vxlan", pod_ip="10.244.1.5/24", pod_hw_addr="0a:58:0a:f4:01:05",
            interface="eth0", worker_node_ip="192.0.2.10/24",
            routes=(Route(dst="", gw="10.244.1.1", dev="eth0"),), mtu=1450,
            vxlan_port=4789, vxlan_id=vni,
        )

    async def setup(
        self, sandbox_id: str, netns_path: str, network: PodNetwork,
        vm_ips: Sequence[IPv4Address | IPv6Address],
    ) -> None:
        self.calls.append(("setup", sandbox_id))
        if self.fail_setup:
            raise PodNetworkError("injected tunnel setup failure")
        self.active[sandbox_id] = tuple(str(ip) for ip in vm_ips)

    async def teardown(self, sandbox_id: str, netns_path: str, network: PodNetwork) -> None:
        self.calls.append(("teardown", sandbox_id))
        self.active.pop(sandbox_id, None)

    def restore(self, sandbox_id: str, network: PodNetwork) -> None:
        self.calls.append(("restore", sandbox_id))
        if network.vxlan_id:
            self.allocator.restore(sandbox_id, network.vxlan_id)

    def release(self, sandbox_id: str) -> None:
        self.calls.append(("release", sandbox_id))
        self.allocator.release(sandbox_id)
