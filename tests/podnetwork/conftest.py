"""Fixtures for the pod network tests (real network namespaces)."""

from tests.netns import netns_pool

__all__ = ["netns_pool"]
