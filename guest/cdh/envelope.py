"""Envelope secrets: a data key (DEK) wrapped by a KMS, and the secret encrypted with it.

The sealed secret's payload, as guest-components' ``EnvelopeSecret`` (flattened beside
``version`` and ``type``)::

    {"version": "0.1.0", "type": "envelope",
     "key_id": "<key in the KMS>",
     "encrypted_key": "<std base64 of the wrapped DEK>",
     "encrypted_data": "<std base64 of the ciphertext (A256GCM: ciphertext || 16-byte tag)>",
     "wrap_type": "A256GCM" | "A256CTR",
     "iv": "<std base64; 12 bytes for A256GCM, 16 for A256CTR>",
     "provider": "aliyun" | "aws" | "ehsm",
     "provider_settings": {...}, "annotations": {...}}

Decryptor providers are upstream's (names case-insensitive): ``aws`` (KMS Decrypt with the
credential file ``$AWS_IN_GUEST_KEY_PATH/credential.json``, default
``/run/confidential-containers/cdh/kms-credential/aws``; ``provider_settings.region``;
``annotations.encryption_context``), needing boto3 (the ``aws`` extra); ``aliyun`` and
``ehsm`` are refused by name. Upstream has no ``kbs`` decryptor (KBS is a vault provider
only), so an envelope naming ``kbs`` is an unsupported provider here as there.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from guest.errors import GuestError

KMS_CREDENTIALS = Path("/run/confidential-containers/cdh/kms-credential")
AWS_KEY_PATH_ENV = "AWS_IN_GUEST_KEY_PATH"
WRAP_TYPES = ("A256GCM", "A256CTR")
_FIELDS = ("key_id", "encrypted_key", "encrypted_data", "iv", "provider")
#: upstream's cloud KMS decryptors that this CDH cannot reach
_CLOUD_ONLY = {"aliyun": "Aliyun KMS", "ehsm": "Intel eHSM KMS"}


class EnvelopeError(GuestError):
    """An envelope secret is malformed, or its KMS or cipher refused it."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"unseal envelope secret failed: {detail}")


class Decrypter(Protocol):
    async def decrypt(
        self, ciphertext: bytes, key_id: str, annotations: Mapping[str, Any]
    ) -> bytes:
        """Unwrap the DEK."""
        ...


@dataclass(frozen=True, slots=True)
class EnvelopeSecret:
    key_id: str
    encrypted_key: str
    encrypted_data: str
    wrap_type: str
    iv: str
    provider: str
    provider_settings: Mapping[str, Any]
    annotations: Mapping[str, Any]

    @classmethod
    def from_json(cls, secret: Mapping[str, Any]) -> EnvelopeSecret:
        missing = [name for name in _FIELDS if not isinstance(secret.get(name), str)]
        if missing:
            raise EnvelopeError(f"field {missing[0]!r} missing or not a string")
        if secret.get("wrap_type") not in WRAP_TYPES:
            raise EnvelopeError(f"unknown wrap_type {secret.get('wrap_type')!r}")
        for name in ("provider_settings", "annotations"):
            if not isinstance(secret.get(name), dict):
                raise EnvelopeError(f"field {name!r} missing or not an object")
        return cls(**{name: secret[name] for name in cls.__slots__})  # type: ignore[arg-type]


def _b64(text: str, context: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EnvelopeError(f"base64 decoding failed when {context}") from exc


async def unseal(secret: EnvelopeSecret) -> bytes:
    """Unwrap the DEK with the secret's KMS, then decrypt the data with it."""
    wrapped = _b64(secret.encrypted_key, "decode `encrypted_key`")
    decrypter = new_decrypter(secret.provider, secret.provider_settings)
    dek = await decrypter.decrypt(wrapped, secret.key_id, secret.annotations)
    iv = _b64(secret.iv, "decode iv")
    data = _b64(secret.encrypted_data, "decode encrypted_data")
    return decrypt(dek, data, iv, secret.wrap_type)


def decrypt(key: bytes, data: bytes, iv: bytes, wrap_type: str) -> bytes:
    if len(key) != 32:
        raise EnvelopeError("decrypt envelope: Failed to convert array to key")
    if wrap_type == "A256GCM":
        if len(iv) != 12:
            raise EnvelopeError("decrypt envelope: Failed to convert array to nonce")
        try:
            return AESGCM(key).decrypt(iv, data, None)
        except InvalidTag:
            raise EnvelopeError("decrypt envelope: aes-256-gcm decrypt failed") from None
    if len(iv) != 16:
        raise EnvelopeError("decrypt envelope: Failed to convert array to nonce")
    decryptor = Cipher(algorithms.AES256(key), modes.CTR(iv)).decryptor()
    return decryptor.update(data) + decryptor.finalize()


def new_decrypter(provider: str, settings: Mapping[str, Any]) -> Decrypter:
    name = provider.lower()
    if name == "aws":
        key_path = Path(os.environ.get(AWS_KEY_PATH_ENV, str(KMS_CREDENTIALS / "aws")))
        return AwsKms.from_settings(settings, key_path / "credential.json")
    if name in _CLOUD_ONLY:
        raise EnvelopeError(
            f"KMS provider {provider!r} ({_CLOUD_ONLY[name]}) is not available in this "
            "confidential-data-hub: it needs that cloud's KMS client"
        )
    raise EnvelopeError(f"kms interface when create KMS provider: Unsupported provider: {provider}")


@dataclass(frozen=True, slots=True)
class AwsKms:
    """AWS KMS ``Decrypt`` with static credentials, as upstream's ``AwsKmsClient``. The
    endpoint is the SDK's (``AWS_ENDPOINT_URL`` redirects it, as for upstream's SDK)."""

    region: str
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], credential_file: Path) -> AwsKms:
        region = settings.get("region")
        if not isinstance(region, str):
            raise EnvelopeError("AWS KMS/Secrets Manager error: parse provider setting failed")
        try:
            credential = json.loads(credential_file.read_text())
            return cls(
                region,
                credential["access_key_id"],
                credential["secret_access_key"],
                credential.get("session_token"),
            )
        except OSError as exc:
            raise EnvelopeError(
                "AWS KMS/Secrets Manager error: "
                f"read credential file {credential_file} failed: {exc}"
            ) from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise EnvelopeError("AWS KMS/Secrets Manager error: parse credential failed") from exc

    async def decrypt(
        self, ciphertext: bytes, key_id: str, annotations: Mapping[str, Any]
    ) -> bytes:
        context = annotations.get("encryption_context") or {}
        if not isinstance(context, dict):
            raise EnvelopeError(
                "AWS KMS/Secrets Manager error: deserialize crypt annotations failed"
            )
        return await asyncio.to_thread(self._decrypt, ciphertext, key_id, context)

    def _decrypt(self, ciphertext: bytes, key_id: str, context: dict[str, str]) -> bytes:
        try:
            import boto3
            from botocore.exceptions import BotoCoreError, ClientError
        except ImportError as exc:
            raise EnvelopeError("KMS provider 'aws' needs boto3 (the aws extra)") from exc
        client = boto3.client(
            "kms",
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            aws_session_token=self.session_token,
        )
        request: dict[str, Any] = {"KeyId": key_id, "CiphertextBlob": ciphertext}
        if context:
            request["EncryptionContext"] = context
        try:
            return bytes(client.decrypt(**request)["Plaintext"])
        except (BotoCoreError, ClientError) as exc:
            raise EnvelopeError(
                f"AWS KMS/Secrets Manager error: AWS KMS decrypt failed: {exc}"
            ) from exc
