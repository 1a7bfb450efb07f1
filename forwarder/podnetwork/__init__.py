"""Pod VM side of the pod network: ``setup_pod_network(apf.pod_network)`` before listening."""

from __future__ import annotations

from forwarder.podnetwork.setup import (
    DEFAULT_POD_NETNS,
    MAX_MTU,
    PodNetworkHandle,
    setup_pod_network,
)
from podnetwork.errors import PodNetworkError

__all__ = [
    "DEFAULT_POD_NETNS",
    "MAX_MTU",
    "PodNetworkError",
    "PodNetworkHandle",
    "setup_pod_network",
]
