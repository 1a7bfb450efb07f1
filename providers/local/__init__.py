"""The ``local`` provider: a pod VM is a local process group, in its own network namespace.

Each "VM" runs ``process-user-data provision-files`` against a config-drive directory, then
an agent (``LOCAL_AGENT_COMMAND`` or :mod:`providers.local.devagent`, a development
stand-in for kata-agent that runs no containers), then ``agent-protocol-forwarder``, all
under one supervisor (:mod:`providers.local.vm`). The whole data path of peer pods, the
worker-side tunnel included, thus runs on one machine without a hypervisor or a cloud.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from providers.local.settings import LocalSettings

if TYPE_CHECKING:
    from providers.local.provider import LocalProvider

Settings = LocalSettings

__all__ = ["Settings", "make_provider"]


def make_provider(settings: LocalSettings, *, node_name: str) -> LocalProvider:
    """Build the provider; nothing is created until one of its methods runs."""
    from providers.local.provider import LocalProvider

    return LocalProvider(settings, node_name=node_name)
