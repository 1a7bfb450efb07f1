"""AWS provider: confidential (AMD SEV-SNP) EC2 instances as pod VMs.

Importing this package does not import boto3; :func:`make_provider` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from providers.aws.settings import AwsSettings

if TYPE_CHECKING:
    from providers.aws.provider import AwsProvider

Settings = AwsSettings

__all__ = ["Settings", "make_provider"]


def make_provider(settings: AwsSettings, *, node_name: str) -> AwsProvider:
    """Build the provider; no network call happens until one of its methods runs."""
    from providers.aws.provider import AwsProvider

    return AwsProvider(settings, node_name=node_name)
