"""Errors of the pod VM side pod network."""

from __future__ import annotations


class PodNetworkError(Exception):
    """The pod network could not be built or removed in the pod VM; the text says why."""
