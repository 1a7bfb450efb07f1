"""The KBS client against the loopback Trustee: handshake, resources, and what goes wrong."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import socket
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from guest.errors import HandshakeError, KbsError, ResourceUriError, ResponseError, Unauthorized
from guest.kbs.client import RcarClient, fetch_resource
from guest.kbs.http import new_session
from guest.kbs.keys import P256, P521, RSA_OAEP_256, TeeKeyPair
from guest.kbs.resource_uri import ResourceUri
from tests.guest.conftest import KEY1
from tests.guest.kbs_server import ALLOW_ALL, DEFAULT_POLICY, KbsState, LoopbackKbs

KEY1_URI = ResourceUri.parse("kbs:///default/key/key1")


class SampleEvidence:
    tee = "sample"

    def __init__(self) -> None:
        self.report_data: list[bytes] = []

    async def primary_evidence(self, report_data: bytes) -> Any:
        self.report_data.append(report_data)
        return {"svn": "1", "report_data": base64.b64encode(report_data).decode()}

    async def additional_evidence(self, report_data: bytes) -> str:
        return ""


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with new_session(None) as s:
        yield s


def client(kbs: LoopbackKbs, session: aiohttp.ClientSession, **kwargs: Any) -> RcarClient:
    return RcarClient(kbs.url, session, SampleEvidence(), retry_delay=0.01, **kwargs)


@pytest.mark.parametrize("algorithm", [P256, P521, RSA_OAEP_256])
async def test_resource_with_each_tee_key_algorithm(
    kbs: LoopbackKbs, session: aiohttp.ClientSession, algorithm: str
) -> None:
    rcar = client(kbs, session, key_algorithm=algorithm)
    assert await rcar.get_resource(KEY1_URI) == KEY1
    assert (kbs.state.auth_count, kbs.state.attest_count) == (1, 1)
    token, key = await rcar.get_token()
    assert (
        token.claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"]["sample"]["svn"] == "1"
    )
    assert key.algorithm == algorithm


async def test_handshake_wire_shape(kbs: LoopbackKbs, session: aiohttp.ClientSession) -> None:
    """The /auth body and the cookie, byte for byte where it matters."""
    sent: list[Any] = []

    async def spy(
        sess: aiohttp.ClientSession, ctx: Any, params: aiohttp.TraceRequestChunkSentParams
    ) -> None:
        sent.append(json.loads(params.chunk))

    trace = aiohttp.TraceConfig()
    trace.on_request_chunk_sent.append(spy)
    async with aiohttp.ClientSession(
        cookie_jar=aiohttp.CookieJar(unsafe=True), trace_configs=[trace]
    ) as traced:
        rcar = client(kbs, traced)
        await rcar.get_token()
    assert sent[0] == {
        "version": "0.4.0",
        "tee": "sample",
        "extra-params": {"supported-hash-algorithms": ["sha256", "sha384", "sha512", "sm3"]},
    }
    attestation = sent[1]
    assert list(attestation) == ["init-data", "runtime-data", "tee-evidence"]
    assert attestation["init-data"] is None
    assert set(attestation["runtime-data"]) == {"nonce", "tee-pubkey"}
    assert len(attestation["runtime-data"]["nonce"]) == 44
    assert attestation["tee-evidence"]["additional_evidence"] == ""
    pubkey = attestation["runtime-data"]["tee-pubkey"]
    assert pubkey["kty"] == "EC" and pubkey["crv"] == "P-256" and pubkey["alg"] == "ECDH-ES+A256KW"
    assert len(base64.urlsafe_b64decode(pubkey["x"] + "=")) == 32


async def test_initdata_is_sent_as_toml(kbs: LoopbackKbs, session: aiohttp.ClientSession) -> None:
    rcar = client(kbs, session, initdata_toml='algorithm = "sha384"\nversion = "0.1.0"\n')
    token, _ = await rcar.get_token()
    assert "init_data" in token.claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"]


async def test_token_is_cached_until_shortly_before_exp(
    kbs: LoopbackKbs, session: aiohttp.ClientSession
) -> None:
    rcar = client(kbs, session)
    first, _ = await rcar.get_token()
    again, _ = await rcar.get_token()
    assert again is first and kbs.state.attest_count == 1
    kbs.state.token_duration = 10  # within the renewal margin: every token is "about to expire"
    await rcar.get_token(renew=True)
    await rcar.get_token()
    assert kbs.state.attest_count == 3


async def test_default_policy_denies_sample(
    kbs: LoopbackKbs, session: aiohttp.ClientSession
) -> None:
    kbs.state.policy = DEFAULT_POLICY
    rcar = client(kbs, session)
    with pytest.raises(Unauthorized):
        await rcar.get_resource(KEY1_URI)
    assert kbs.state.resource_count == 3  # 401 PolicyDeny is retried after re-attesting
    assert kbs.state.attest_count == 3


async def test_401_succeeds_after_reattesting(
    kbs: LoopbackKbs, session: aiohttp.ClientSession
) -> None:
    rcar = client(kbs, session)
    token, _ = await rcar.get_token()
    kbs.state.revoked.add(token.content)  # the KBS stops honouring the cached token
    kbs.state.sessions.clear()
    assert await rcar.get_resource(KEY1_URI) == KEY1
    assert (kbs.state.attest_count, kbs.state.resource_count) == (2, 2)
    assert (await rcar.get_token())[0].content != token.content


async def test_wrong_nonce_is_refused(kbs: LoopbackKbs, session: aiohttp.ClientSession) -> None:
    async with session.post(
        f"{kbs.url}/kbs/v0/auth", json={"version": "0.4.0", "tee": "sample", "extra-params": ""}
    ) as response:
        assert response.status == 200
        challenge = await response.json()
        assert challenge["extra-params"] == ""
        assert len(base64.b64decode(challenge["nonce"])) == 32
        cookie = response.cookies["kbs-session-id"]
        assert len(cookie.value) == 32 and int(cookie.value, 16) >= 0
    attestation = {
        "init-data": None,
        "runtime-data": {
            "nonce": base64.b64encode(bytes(32)).decode(),
            "tee-pubkey": TeeKeyPair.generate().public_key(),
        },
        "tee-evidence": {
            "primary_evidence": {"svn": "1", "report_data": ""},
            "additional_evidence": "",
        },
    }
    async with session.post(f"{kbs.url}/kbs/v0/attest", json=attestation) as response:
        assert response.status == 401
        assert json.loads(await response.read()) == {
            "type": "https://github.com/confidential-containers/kbs/errors/AttestationError",
            "detail": "Attestation error: RCAR handshake Attest failed",
        }


async def test_report_data_binding_is_checked(
    kbs: LoopbackKbs, session: aiohttp.ClientSession
) -> None:
    class Lying(SampleEvidence):
        async def primary_evidence(self, report_data: bytes) -> Any:
            return await super().primary_evidence(bytes(48))

    rcar = RcarClient(kbs.url, session, Lying(), attempts=2, retry_delay=0.01)
    with pytest.raises(HandshakeError, match="retried 2 times"):
        await rcar.get_token()


async def test_expired_session_is_refused(kbs: LoopbackKbs, session: aiohttp.ClientSession) -> None:
    kbs.state.session_timeout = 0
    rcar = client(kbs, session, attempts=1)
    with pytest.raises(HandshakeError, match="KBS attest unauthorized"):
        await rcar.get_token()


async def test_session_expired_at_the_kbs_is_refused_and_dropped(
    kbs: LoopbackKbs, session: aiohttp.ClientSession
) -> None:
    async with session.post(
        f"{kbs.url}/kbs/v0/auth", json={"version": "0.4.0", "tee": "sample", "extra-params": ""}
    ) as response:
        challenge = await response.json()
    for record in kbs.state.sessions.values():
        record.expires = time.time() - 1  # the cookie is still in the client's jar
    key = TeeKeyPair.generate().public_key()
    report = await SampleEvidence().primary_evidence(b"")
    attestation = {
        "init-data": None,
        "runtime-data": {"nonce": challenge["nonce"], "tee-pubkey": key},
        "tee-evidence": {"primary_evidence": report, "additional_evidence": ""},
    }
    async with session.post(f"{kbs.url}/kbs/v0/attest", json=attestation) as response:
        assert response.status == 401
    assert kbs.state.sessions == {}


async def test_old_protocol_version_is_refused(
    kbs: LoopbackKbs, session: aiohttp.ClientSession
) -> None:
    async with session.post(
        f"{kbs.url}/kbs/v0/auth", json={"version": "0.1.1", "tee": "sample", "extra-params": ""}
    ) as response:
        assert response.status == 401
        body = json.loads(await response.read())
    assert body["detail"].endswith("expect =0.4.0 while the request is 0.1.1")


async def test_tampered_tag_does_not_decrypt(
    kbs: LoopbackKbs, session: aiohttp.ClientSession
) -> None:
    kbs.state.tamper_tag = True
    with pytest.raises(ResponseError, match="JWE decryption failed"):
        await client(kbs, session).get_resource(KEY1_URI)


async def test_wrong_key_does_not_decrypt(kbs: LoopbackKbs, session: aiohttp.ClientSession) -> None:
    rcar = client(kbs, session)
    token, _ = await rcar.get_token()
    other = TeeKeyPair.generate()

    async def credentials(renew: bool) -> Any:
        return token, other

    with pytest.raises(ResponseError, match="JWE decryption failed"):
        await fetch_resource(session, kbs.url, KEY1_URI, credentials)


async def test_oversized_response_is_refused(
    kbs: LoopbackKbs, session: aiohttp.ClientSession
) -> None:
    rcar = client(kbs, session)
    await rcar.get_token()
    kbs.state.pad_response = 4096
    with pytest.raises(ResponseError, match="exceeds"):
        await fetch_resource(session, kbs.url, KEY1_URI, rcar.get_token, limit=2048)


async def test_missing_resource_is_401_plugin_internal_error(
    kbs: LoopbackKbs, session: aiohttp.ClientSession
) -> None:
    with pytest.raises(Unauthorized):
        await client(kbs, session).get_resource(ResourceUri.parse("kbs:///default/key/nope"))


async def test_unknown_plugin_is_404(kbs: LoopbackKbs, session: aiohttp.ClientSession) -> None:
    with pytest.raises(KbsError, match="Not Found"):
        await client(kbs, session).get_resource(ResourceUri.parse("kbs+nebula:///credential"))


async def test_kbs_down_bounded_retries_and_a_clear_error(session: aiohttp.ClientSession) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the with-block ends: nothing listens
    rcar = RcarClient(f"http://127.0.0.1:{port}", session, SampleEvidence(), retry_delay=0.01)
    started = time.monotonic()
    with pytest.raises(HandshakeError, match="retried 5 times") as raised:
        await rcar.get_token()
    assert "Cannot connect" in str(raised.value) or "onnect" in str(raised.value)
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    "uri",
    [
        "kbs:///default/../key1",
        "kbs:///default/key/..",
        "kbs:///default/key",
        "kbs:///default/key/key1/extra",
        "kbs:///default//key1",
        "kbs:///default/%2e%2e/key1",
        "http:///default/key/key1",
    ],
)
def test_resource_uri_refuses_traversal_and_bad_shapes(uri: str) -> None:
    with pytest.raises(ResourceUriError):
        ResourceUri.parse(uri)


def test_resource_uri_forms() -> None:
    uri = ResourceUri.parse("kbs://1.2.3.4:8080/default/key/key1")
    assert (uri.kbs_addr, uri.plugin, uri.resource_path()) == (
        "1.2.3.4:8080",
        "resource",
        "default/key/key1",
    )
    plugin = ResourceUri.parse("kbs+pkcs11:///a/b?x=1")
    assert (plugin.plugin, plugin.resource_path(), plugin.query) == ("pkcs11", "a/b", "x=1")
    assert str(plugin) == "kbs+pkcs11:///a/b?x=1"


def test_pem_round_trip_and_no_secret_in_repr() -> None:
    for algorithm in (P256, P521, RSA_OAEP_256):
        key = TeeKeyPair.generate(algorithm)
        pem = key.to_pem()
        header = (
            "-----BEGIN RSA PRIVATE KEY-----"
            if algorithm == RSA_OAEP_256
            else "-----BEGIN PRIVATE KEY-----"
        )
        assert pem.startswith(header)
        again = TeeKeyPair.from_pem(pem)
        assert again.algorithm == algorithm
        assert again.public_key() == key.public_key()
        assert pem not in repr(key)


def self_signed(tmp_path: Path) -> tuple[str, ssl.SSLContext]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "loopback kbs")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    (tmp_path / "kbs.crt").write_text(pem)
    (tmp_path / "kbs.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "kbs.crt", tmp_path / "kbs.key")
    return pem, context


async def test_https_with_the_cert_from_the_config(tmp_path: Path) -> None:
    pem, context = self_signed(tmp_path)
    server = LoopbackKbs(KbsState(policy=ALLOW_ALL, resources={"default/key/key1": KEY1}))
    url = await server.start(context)
    try:
        async with new_session(pem) as trusting:
            rcar = RcarClient(url, trusting, SampleEvidence(), retry_delay=0.01)
            assert await rcar.get_resource(KEY1_URI) == KEY1
        async with new_session(None) as default:
            rcar = RcarClient(url, default, SampleEvidence(), attempts=1)
            with pytest.raises(HandshakeError, match="certificate"):
                await rcar.get_token()
    finally:
        await server.aclose()
