"""Sealed secrets: ``sealed.<JWS header>.<JWS payload>.<signature>`` (ES256).

The header's ``kid`` names the P-256 verification key (a JWK): a ``kbs://`` resource, or a
file under ``/run/confidential-containers/cdh/sealed-secret``. The payload is a secret of
``version`` 0.1.0 and ``type`` ``vault`` (fetched by name from the provider; provider ``kbs``
here) or ``envelope`` (a data key wrapped by a KMS: :mod:`guest.cdh.envelope`).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from jwcrypto import jwk, jws
from jwcrypto.common import JWException

from guest.cdh import envelope
from guest.errors import GuestError, ResourceUriError
from guest.kbs.resource_uri import ResourceUri

SIGNING_CREDENTIALS_PATH = Path("/run/confidential-containers/cdh/sealed-secret")
VERSION = "0.1.0"
PREFIX = "sealed."
SKIP_ENV = "SKIP_SEALED_SECRET_VERIFICATION"

Fetch = Callable[[str], Awaitable[bytes]]


class SecretError(GuestError):
    """A sealed secret cannot be verified or unsealed."""


def _b64url(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise SecretError(
            "parse SealedSecret failed: failed to decode secret body as base64 "
            "(URL-safe without padding)"
        ) from exc


class SealedSecrets:
    def __init__(
        self,
        fetch: Fetch,
        *,
        skip_verification: bool = False,
        credentials: Path = SIGNING_CREDENTIALS_PATH,
    ) -> None:
        self.fetch = fetch
        self.skip_verification = skip_verification or os.environ.get(SKIP_ENV) == "true"
        self.credentials = credentials

    async def unseal(self, sealed: bytes) -> bytes:
        try:
            text = sealed.decode()
        except UnicodeDecodeError:
            raise SecretError("parse SealedSecret failed: Secret string must be UTF-8") from None
        payload = await (self._unverified(text) if self.skip_verification else self._verified(text))
        try:
            secret = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            secret = None
        if not isinstance(secret, dict) or not isinstance(secret.get("type"), str):
            raise SecretError(
                "parse SealedSecret failed: malformed input sealed secret format "
                "(json deserialization failed)"
            )
        if secret.get("version") != VERSION:
            raise SecretError(f"version not supported, only {VERSION} supported")
        return await self._open(secret)

    async def _unverified(self, text: str) -> bytes:
        sections = text.split(".")
        if len(sections) != 4:
            raise SecretError("parse SealedSecret failed: malformed input sealed secret")
        return _b64url(sections[2])

    async def _verified(self, text: str) -> bytes:
        compact = text.removeprefix(PREFIX)
        token = jws.JWS()
        try:
            token.deserialize(compact)
        except (JWException, ValueError) as exc:
            raise SecretError("parse SealedSecret failed: Failed to parse JWS") from exc
        header = token.jose_header if isinstance(token.jose_header, dict) else {}
        kid, alg = header.get("kid"), header.get("alg")
        if not isinstance(kid, str):
            raise SecretError("parse SealedSecret failed: Could not find kid")
        if alg != "ES256":
            raise SecretError("Signing key error: JWS algorithm must be ES256")
        key = self._jwk(await self._verification_key(kid))
        try:
            token.verify(key, alg="ES256")
        except (JWException, ValueError) as exc:
            raise SecretError("Signature Error: signature verification failed") from exc
        return bytes(token.payload)

    @staticmethod
    def _jwk(raw: bytes) -> jwk.JWK:
        try:
            key = jwk.JWK.from_json(raw)
        except (JWException, ValueError, TypeError) as exc:
            raise SecretError("Signing key error: Could not parse verification key.") from exc
        if key.get("kty") != "EC" or key.get("crv") != "P-256":
            raise SecretError("Signing key error: Key must be P256")
        return key

    async def _verification_key(self, kid: str) -> bytes:
        try:
            ResourceUri.parse(kid)
        except ResourceUriError:
            pass
        else:
            return await self.fetch(kid)
        try:
            base = self.credentials.resolve(strict=True)
            path = (base / kid).resolve(strict=True)
        except OSError as exc:
            raise SecretError(
                "parse SealedSecret failed: KID is invalid. Must be a KBS URI or a credential path."
            ) from exc
        if not path.is_relative_to(base):
            raise SecretError("parse SealedSecret failed: Invalid KID Key Path")
        return path.read_bytes()

    async def _open(self, secret: dict[str, Any]) -> bytes:
        if secret["type"] == "vault":
            if secret.get("provider") != "kbs" or not isinstance(secret.get("name"), str):
                raise SecretError(
                    f"unseal vault secret failed: provider {secret.get('provider')!r} "
                    "is not supported (kbs only)"
                )
            return await self.fetch(secret["name"])
        if secret["type"] == "envelope":
            try:
                return await envelope.unseal(envelope.EnvelopeSecret.from_json(secret))
            except envelope.EnvelopeError as exc:
                raise SecretError(str(exc)) from exc
        raise SecretError("parse SealedSecret failed: unknown secret type")
