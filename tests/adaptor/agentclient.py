"""A long-lived agent client that reconnects on failure, as the Kata shim's does."""

from __future__ import annotations

from adaptor.shimclient import AgentClient as ReconnectingAgentClient

__all__ = ["ReconnectingAgentClient"]
