"""The Azure SDK clients of one provider: credential, compute, network, one HTTP pool."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import requests
from azure.core.credentials import TokenCredential
from azure.core.pipeline.transport import RequestsTransport
from azure.identity import ClientSecretCredential, DefaultAzureCredential
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.network import NetworkManagementClient
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from providers.azure.settings import AzureSettings

log = logging.getLogger(__name__)

SDK_RETRIES = 3  # azure-core's own retries (429 with Retry-After, 5xx, connection errors)


@dataclass
class Clients:
    credential: TokenCredential
    compute: ComputeManagementClient
    network: NetworkManagementClient
    session: requests.Session

    def close(self) -> None:
        self.compute.close()
        self.network.close()
        close = getattr(self.credential, "close", None)
        if close is not None:
            close()
        self.session.close()


def make_credential(s: AzureSettings, verify: str | bool | None) -> TokenCredential:
    kwargs: dict[str, Any] = {}
    if verify is not None:
        kwargs["connection_verify"] = verify
    if s.authority_host:
        kwargs["authority"] = s.authority_host
    if s.client_secret:
        log.info("using the client secret credential of client %s", s.client_id)
        return ClientSecretCredential(
            s.tenant_id, s.client_id, s.client_secret,
            disable_instance_discovery=bool(s.authority_host), **kwargs,
        )
    log.info("using workload identity (the default credential chain)")
    if s.client_id:
        kwargs["workload_identity_client_id"] = s.client_id
    if s.tenant_id:
        kwargs["workload_identity_tenant_id"] = s.tenant_id
    return DefaultAzureCredential(exclude_interactive_browser_credential=True, **kwargs)


def make_clients(
    s: AzureSettings, *, pool: int, polling_interval: float, verify: str | bool | None = None,
) -> Clients:
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=pool)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    credential = make_credential(s, verify)
    common: dict[str, Any] = {"polling_interval": polling_interval, "retry_total": SDK_RETRIES}
    if s.arm_endpoint:
        endpoint = s.arm_endpoint.rstrip("/")
        common["base_url"] = endpoint
        common["credential_scopes"] = [f"{endpoint}/.default"]

    def transport() -> RequestsTransport:
        extra: dict[str, Any] = {} if verify is None else {"connection_verify": verify}
        return RequestsTransport(session=session, session_owner=False, **extra)

    compute = ComputeManagementClient(
        credential, s.subscription_id, transport=transport(), **common)
    network = NetworkManagementClient(
        credential, s.subscription_id, transport=transport(), **common)
    return Clients(credential, compute, network, session)


def generate_ssh_public_key() -> str:
    """An OpenSSH RSA-4096 public key whose private half is thrown away (as upstream does
    when no key is configured: nobody can log in with it)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return public.decode("ascii")
