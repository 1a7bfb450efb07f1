"""Errors of the worker-side pod network."""

from __future__ import annotations

from adaptor.errors import AdaptorError


class WorkerNetworkError(AdaptorError):
    """Reading the pod network or building/removing its tunnel failed; the text says why."""
