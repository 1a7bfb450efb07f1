"""Envelope sealed secrets: the AES-256-GCM known answer, the field set, and AWS KMS as the
DEK's KMS (moto_server on loopback as the KMS endpoint)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from guest.cdh import envelope
from guest.cdh.envelope import EnvelopeError, EnvelopeSecret
from guest.cdh.sealed import SecretError
from tests.guest.test_sealed import seal, sealed_secrets
from tests.providers.aws.motoserver import REGION, MotoServer

# McGrew & Viega, "The Galois/Counter Mode of Operation", test case 15 (AES-256, no AAD)
GCM_KEY = bytes.fromhex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308")
GCM_IV = bytes.fromhex("cafebabefacedbaddecaf888")
GCM_PLAIN = bytes.fromhex(
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
    "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255"
)
GCM_CIPHER_TAG = bytes.fromhex(
    "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
    "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad"
    "b094dac5d93471bdec1a502270e3cc6c"
)
KID = "kbs:///default/signing/key"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def envelope_json(**fields: Any) -> dict[str, Any]:
    """The field set of guest-components' ``EnvelopeSecret`` (and its envelope-1.json)."""
    return {
        "version": "0.1.0",
        "type": "envelope",
        "key_id": "xxx",
        "encrypted_key": "yyy",
        "encrypted_data": "zzz",
        "wrap_type": "A256GCM",
        "iv": "www",
        "provider": "aliyun",
        "provider_settings": {},
        "annotations": {},
        **fields,
    }


def test_aes_256_gcm_known_answer() -> None:
    assert envelope.decrypt(GCM_KEY, GCM_CIPHER_TAG, GCM_IV, "A256GCM") == GCM_PLAIN
    tampered = GCM_CIPHER_TAG[:-1] + bytes([GCM_CIPHER_TAG[-1] ^ 1])
    with pytest.raises(EnvelopeError, match="aes-256-gcm decrypt failed"):
        envelope.decrypt(GCM_KEY, tampered, GCM_IV, "A256GCM")
    with pytest.raises(EnvelopeError, match="nonce"):
        envelope.decrypt(GCM_KEY, GCM_CIPHER_TAG, GCM_IV + b"\0", "A256GCM")


def test_aes_256_ctr_known_answer() -> None:
    # NIST SP 800-38A F.5.5 (CTR-AES256.Decrypt), first block
    key = bytes.fromhex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
    counter = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
    cipher = bytes.fromhex("601ec313775789a5b7a7f504bbf3d228")
    plain = bytes.fromhex("6bc1bee22e409f96e93d7e117393172a")
    assert envelope.decrypt(key, cipher, counter, "A256CTR") == plain


def test_field_set_parses_and_cloud_providers_are_refused_by_name() -> None:
    secret = EnvelopeSecret.from_json(envelope_json())
    assert (secret.key_id, secret.provider, secret.wrap_type) == ("xxx", "aliyun", "A256GCM")
    with pytest.raises(EnvelopeError, match=r"'aliyun'.*Aliyun KMS"):
        envelope.new_decrypter("aliyun", {})
    with pytest.raises(EnvelopeError, match=r"'eHSM'.*Intel eHSM KMS"):
        envelope.new_decrypter("eHSM", {})
    with pytest.raises(EnvelopeError, match="Unsupported provider: kbs"):
        envelope.new_decrypter("kbs", {})
    with pytest.raises(EnvelopeError, match="wrap_type"):
        EnvelopeSecret.from_json(envelope_json(wrap_type="A128GCM"))
    with pytest.raises(EnvelopeError, match="'iv'"):
        EnvelopeSecret.from_json({k: v for k, v in envelope_json().items() if k != "iv"})


async def test_bad_base64_names_the_field(tmp_path: Path) -> None:
    secret = seal(envelope_json(encrypted_key="not base64!"), KID)
    with pytest.raises(SecretError, match="decode `encrypted_key`"):
        await sealed_secrets(tmp_path).unseal(secret)


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    server = MotoServer.start(validate=False)
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def aws_kms(moto: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    boto3 = pytest.importorskip("boto3")
    credentials = tmp_path / "kms-credential"
    credentials.mkdir()
    (credentials / "credential.json").write_text(
        json.dumps({"access_key_id": "AKIDTEST", "secret_access_key": "secret"})
    )
    monkeypatch.setenv("AWS_IN_GUEST_KEY_PATH", str(credentials))
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto)
    return boto3.client(
        "kms",
        region_name=REGION,
        endpoint_url=moto,
        aws_access_key_id="AKIDTEST",
        aws_secret_access_key="secret",
    )


async def test_aws_kms_envelope(aws_kms: Any, tmp_path: Path) -> None:
    key_id = aws_kms.create_key()["KeyMetadata"]["KeyId"]
    context = {"purpose": "cdh"}
    wrapped = aws_kms.encrypt(KeyId=key_id, Plaintext=GCM_KEY, EncryptionContext=context)
    secret = envelope_json(
        key_id=key_id,
        encrypted_key=b64(wrapped["CiphertextBlob"]),
        encrypted_data=b64(GCM_CIPHER_TAG),
        iv=b64(GCM_IV),
        provider="aws",
        provider_settings={"region": REGION},
        annotations={"encryption_context": context},
    )
    secrets = sealed_secrets(tmp_path)
    assert await secrets.unseal(seal(secret, KID)) == GCM_PLAIN

    wrong_context = {**secret, "annotations": {"encryption_context": {"purpose": "other"}}}
    with pytest.raises(SecretError, match="AWS KMS decrypt failed"):
        await secrets.unseal(seal(wrong_context, KID))
    tampered = {**secret, "encrypted_data": b64(GCM_CIPHER_TAG[:-1] + b"\0")}
    with pytest.raises(SecretError, match="aes-256-gcm decrypt failed"):
        await secrets.unseal(seal(tampered, KID))


async def test_aws_without_credentials_says_which_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_IN_GUEST_KEY_PATH", str(tmp_path / "none"))
    secret = envelope_json(
        encrypted_key=b64(b"k"), provider="AWS", provider_settings={"region": REGION}
    )
    with pytest.raises(SecretError, match=r"read credential file .*none/credential\.json"):
        await sealed_secrets(tmp_path).unseal(seal(secret, KID))
