"""Sealed secrets: ES256 JWS signed here with ``cryptography``, verified by the CDH."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from guest.cdh.config import CdhConfig, KbcConfig
from guest.cdh.hub import Hub
from guest.cdh.kbc import OfflineFsKbc
from guest.cdh.sealed import SealedSecrets, SecretError
from guest.cdh.service import CdhServices
from protocols.kata import confidential_data_hub_pb2 as pb
from protocols.ttrpc import Code, Server, TTRPCError
from protocols.ttrpc.testing import connect_pair
from tests.guest.conftest import KEY1

SIGNER = ec.generate_private_key(ec.SECP256R1())


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwk(key: ec.EllipticCurvePrivateKey) -> bytes:
    numbers = key.public_key().public_numbers()
    return json.dumps(
        {
            "kty": "EC",
            "crv": "P-256",
            "x": b64url(numbers.x.to_bytes(32, "big")),
            "y": b64url(numbers.y.to_bytes(32, "big")),
        }
    ).encode()


def seal(secret: dict[str, Any], kid: str, key: ec.EllipticCurvePrivateKey = SIGNER) -> bytes:
    header = b64url(json.dumps({"alg": "ES256", "kid": kid}).encode())
    payload = b64url(json.dumps(secret).encode())
    der = key.sign(f"{header}.{payload}".encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    signature = b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    return f"sealed.{header}.{payload}.{signature}".encode()


VAULT = {
    "version": "0.1.0",
    "type": "vault",
    "name": "kbs:///default/key/key1",
    "provider": "kbs",
    "provider_settings": {},
    "annotations": {},
}
RESOURCES = {"default/key/key1": KEY1, "default/signing/key": public_jwk(SIGNER)}


def sealed_secrets(tmp_path: Path, **kwargs: Any) -> SealedSecrets:
    kbc = OfflineFsKbc(RESOURCES)
    hub = Hub(CdhConfig(KbcConfig("offline_fs_kbc")), kbc)
    return SealedSecrets(hub.get_resource, credentials=tmp_path, **kwargs)


async def test_vault_secret_with_kbs_kid(tmp_path: Path) -> None:
    assert await sealed_secrets(tmp_path).unseal(seal(VAULT, "kbs:///default/signing/key")) == KEY1


async def test_vault_secret_with_file_kid(tmp_path: Path) -> None:
    (tmp_path / "signer.jwk").write_bytes(public_jwk(SIGNER))
    assert await sealed_secrets(tmp_path).unseal(seal(VAULT, "signer.jwk")) == KEY1


async def test_bad_signature_is_refused(tmp_path: Path) -> None:
    forged = seal(VAULT, "kbs:///default/signing/key", ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(SecretError, match="Signature Error"):
        await sealed_secrets(tmp_path).unseal(forged)
    good = seal(VAULT, "kbs:///default/signing/key").decode()
    head, _body, sig = good.removeprefix("sealed.").split(".")
    other = b64url(json.dumps({**VAULT, "name": "kbs:///default/signing/key"}).encode())
    with pytest.raises(SecretError, match="Signature Error"):
        await sealed_secrets(tmp_path).unseal(f"sealed.{head}.{other}.{sig}".encode())


async def test_kid_cannot_leave_the_credentials_dir(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (tmp_path / "outside.jwk").write_bytes(public_jwk(SIGNER))
    with pytest.raises(SecretError, match="Invalid KID Key Path"):
        await sealed_secrets(creds).unseal(seal(VAULT, "../outside.jwk"))


async def test_skip_verification_and_shapes(tmp_path: Path) -> None:
    unsigned = seal(VAULT, "none", ec.generate_private_key(ec.SECP256R1()))
    assert await sealed_secrets(tmp_path, skip_verification=True).unseal(unsigned) == KEY1
    with pytest.raises(SecretError, match="malformed input sealed secret"):
        await sealed_secrets(tmp_path, skip_verification=True).unseal(b"sealed.a.b")
    with pytest.raises(SecretError, match="version not supported"):
        await sealed_secrets(tmp_path).unseal(
            seal({**VAULT, "version": "0.2.0"}, "kbs:///default/signing/key")
        )
    envelope = {
        "version": "0.1.0",
        "type": "envelope",
        "provider": "aliyun",
        "key_id": "k",
        "encrypted_key": "",
        "encrypted_data": "",
        "wrap_type": "A256GCM",
        "iv": "",
        "provider_settings": {},
        "annotations": {},
    }
    with pytest.raises(SecretError, match="unseal envelope secret failed"):
        await sealed_secrets(tmp_path).unseal(seal(envelope, "kbs:///default/signing/key"))
    header = b64url(json.dumps({"alg": "ES384", "kid": "x"}).encode())
    with pytest.raises(SecretError, match="must be ES256"):
        await sealed_secrets(tmp_path).unseal(f"sealed.{header}.e30.AAAA".encode())


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[Any]:
    hub = Hub(CdhConfig(KbcConfig("offline_fs_kbc")), OfflineFsKbc(RESOURCES))
    server = Server()
    CdhServices(hub, SealedSecrets(hub.get_resource, credentials=tmp_path)).register(server)
    client = await connect_pair(server)
    try:
        yield client
    finally:
        await client.aclose()
        await server.shutdown()


async def test_unseal_over_ttrpc(services: Any) -> None:
    reply = await services.call(
        "api.SealedSecretService",
        "UnsealSecret",
        pb.UnsealSecretInput(secret=seal(VAULT, "kbs:///default/signing/key")),
        pb.UnsealSecretOutput,
    )
    assert reply.plaintext == KEY1
    forged = seal(VAULT, "kbs:///default/signing/key", ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(TTRPCError) as raised:
        await services.call(
            "api.SealedSecretService",
            "UnsealSecret",
            pb.UnsealSecretInput(secret=forged),
            pb.UnsealSecretOutput,
        )
    assert (raised.value.code, raised.value.message) == (
        Code.INTERNAL,
        "[CDH] [ERROR]: Unseal Secret failed",
    )
