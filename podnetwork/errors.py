"""The one error of the pod network, on the worker and in the pod VM."""

from __future__ import annotations

from runtime.errors import PeerPodsError


class PodNetworkError(PeerPodsError):
    """The pod network could not be read, built or removed; the text says why."""
