"""GCP provider: confidential (TDX, SEV, SEV-SNP) Compute Engine instances as pod VMs.

Importing this package does not import google-cloud-compute; :func:`make_provider` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from providers.gcp.settings import GcpSettings

if TYPE_CHECKING:
    from providers.gcp.provider import GcpProvider

Settings = GcpSettings

__all__ = ["Settings", "make_provider"]


def make_provider(settings: GcpSettings, *, node_name: str) -> GcpProvider:
    """Build the provider; no network call happens until one of its methods runs."""
    from providers.gcp.provider import GcpProvider

    return GcpProvider(settings, node_name=node_name)
