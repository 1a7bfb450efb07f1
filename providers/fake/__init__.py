"""The in-memory fake provider: a first-class provider that keeps its cloud in a dict.

It passes the contract suite like every other provider, so the adaptor tests that run on it
mean what they say. It is not in ``providers.registry`` (the daemon's provider list is what
users see); tests load it directly, as a provider package (``Settings`` and
``make_provider``).
"""

from __future__ import annotations

from providers.fake.provider import Faults, Hook, InMemoryProvider, Settings, make_provider

__all__ = ["Faults", "Hook", "InMemoryProvider", "Settings", "make_provider"]
