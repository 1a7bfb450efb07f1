"""The worker-side pod network contract the adaptor calls."""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address
from typing import Protocol

from protocols.apf import PodNetwork


class WorkerNetwork(Protocol):
    async def inspect(self, sandbox_id: str, netns_path: str) -> PodNetwork:
        """Read the pod's network from its netns and allocate the sandbox's VXLAN id (CreateVM).

        Calling it again for the same sandbox returns the same id.
        """
        ...

    async def setup(
        self,
        sandbox_id: str,
        netns_path: str,
        network: PodNetwork,
        vm_ips: Sequence[IPv4Address | IPv6Address],
    ) -> None:
        """Build the worker end of the tunnel to the VM (StartVM, once the VM has an IP).

        On failure (or cancellation) everything this call built has been removed again.
        """
        ...

    async def teardown(self, sandbox_id: str, netns_path: str, network: PodNetwork) -> None:
        """Remove what :meth:`setup` built for this sandbox; fine when the pod netns is
        already gone. Other sandboxes' rules and devices stay.

        Every part is attempted; if one could not be removed, :class:`PodNetworkError` names
        it after the others were. Calling again finishes the job: a missing part counts as
        removed.
        """
        ...

    def restore(self, sandbox_id: str, network: PodNetwork) -> None:
        """After an adaptor restart: mark the sandbox's VXLAN id as in use again."""
        ...

    def release(self, sandbox_id: str) -> None:
        """Forget the sandbox's VXLAN id (after its teardown)."""
        ...
