"""Credentials for the Compute clients: a service account key (``GCP_CREDENTIALS``),
application default credentials, or none at all for a plain-http endpoint.

The key's content never appears in an error message.
"""

from __future__ import annotations

import json
from typing import Any

import google.auth
from google.auth.credentials import AnonymousCredentials, Credentials
from google.oauth2 import service_account

from providers.base import ConfigError

COMPUTE_SCOPE = "https://www.googleapis.com/auth/compute"


def make_credentials(key_json: str, endpoint: str) -> Credentials:
    """The credentials the clients send. An ``http://`` endpoint (a test or private endpoint
    without TLS) gets none: a bearer token must not travel in clear text."""
    if endpoint.startswith("http://"):
        if key_json:
            raise ConfigError(
                "GCP_CREDENTIALS is set but GCP_API_ENDPOINT is plain http: refusing to send "
                "tokens in clear text"
            )
        return AnonymousCredentials()
    if key_json:
        try:
            info: Any = json.loads(key_json)
        except ValueError:
            raise ConfigError("GCP_CREDENTIALS is not valid JSON") from None
        if not isinstance(info, dict):
            raise ConfigError("GCP_CREDENTIALS is not a JSON object")
        try:
            return service_account.Credentials.from_service_account_info(  # type: ignore[no-any-return]
                info, scopes=[COMPUTE_SCOPE]
            )
        except (ValueError, KeyError):
            raise ConfigError(
                "GCP_CREDENTIALS is not a usable service account key (type, client_email, "
                "private_key, token_uri)"
            ) from None
    credentials, _project = google.auth.default(scopes=[COMPUTE_SCOPE])
    return credentials  # type: ignore[no-any-return]
