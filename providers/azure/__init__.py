"""Azure provider: confidential VMs (AMD SEV-SNP or Intel TDX) as pod VMs.

Importing this package does not import the Azure SDK; :func:`make_provider` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from providers.azure.settings import AzureSettings

if TYPE_CHECKING:
    from providers.azure.provider import AzureProvider

Settings = AzureSettings

__all__ = ["Settings", "make_provider"]


def make_provider(settings: AzureSettings, *, node_name: str) -> AzureProvider:
    """Build the provider; no network call happens until one of its methods runs."""
    from providers.azure.provider import AzureProvider

    return AzureProvider(settings, node_name=node_name)
