"""The shared command runner (:mod:`protocols.netcmd`), failing with :class:`PodNetworkError`."""

from __future__ import annotations

from collections.abc import Sequence

from forwarder.podnetwork.errors import PodNetworkError
from protocols import netcmd
from protocols.netcmd import succeeds

__all__ = ["run", "succeeds"]


def run(argv: Sequence[str], *, netns: str | None = None, check: bool = True) -> str:
    try:
        return netcmd.run(argv, netns=netns, check=check)
    except netcmd.CommandError as exc:
        raise PodNetworkError(str(exc)) from None
