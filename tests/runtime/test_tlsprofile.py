"""runtime.tlsprofile: profile validation and PEM-based SSL contexts, over real sockets."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from adaptor.tls import AgentTLS, CertificateAuthority, new_client_certificate
from runtime.tlsprofile import (
    TLSProfile,
    TLSProfileError,
    client_context,
    parse_profile,
    server_context,
)


def test_parse_profile() -> None:
    assert parse_profile() == TLSProfile()
    assert not parse_profile("", "").is_set
    profile = parse_profile(
        "VersionTLS12",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    )
    assert profile.cipher_suites == (
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384")
    assert profile.openssl_ciphers == (
        "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384")
    assert parse_profile("VersionTLS13").min_version == "VersionTLS13"


@pytest.mark.parametrize(
    ("version", "suites", "message"),
    [
        ("VersionTLS10", None, "TLS 1.0 and 1.1 are not supported"),
        ("VersionTLS11", None, "TLS 1.0 and 1.1 are not supported"),
        ("TLS1.2", None, "unknown TLS version"),
        ("VersionTLS13", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
         "cipherSuites may not be specified when minVersion is VersionTLS13"),
        ("", "TLS_BOGUS", "cipher suite TLS_BOGUS not supported or doesn't exist"),
    ],
)
def test_parse_profile_rejects(version: str, suites: str | None, message: str) -> None:
    with pytest.raises(TLSProfileError, match=message):
        parse_profile(version, suites)


async def handshake(server: ssl.SSLContext, client: ssl.SSLContext, name: str) -> ssl.SSLObject:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server)
    port = srv.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client, server_hostname=name)
        data = await reader.read()
        obj = writer.get_extra_info("ssl_object")
        writer.close()
        if data != b"ok":
            raise ConnectionError("server closed without answering")
        return obj
    finally:
        srv.close()
        await srv.wait_closed()


async def test_mutual_tls_with_generated_material() -> None:
    ca = CertificateAuthority()
    server_pair = ca.issue_server("podvm-web-12345678")
    client_pair = new_client_certificate()
    server = server_context(server_pair.cert_pem, server_pair.key_pem, client_pair.cert_pem)
    client = client_context(client_pair.cert_pem, client_pair.key_pem, ca.root_pem)
    obj = await handshake(server, client, "podvm-web-12345678")
    assert obj.version() == "TLSv1.3"
    # Wrong name: the client refuses the server.
    with pytest.raises(ssl.SSLCertVerificationError):
        await handshake(server, client, "podvm-other-12345678")
    # Another CA's client certificate: the server refuses the client.
    stranger = new_client_certificate()
    bad_client = client_context(stranger.cert_pem, stranger.key_pem, ca.root_pem)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await handshake(server, bad_client, "podvm-web-12345678")


async def test_profile_applies_to_both_sides() -> None:
    ca = CertificateAuthority()
    pair = ca.issue_server("vm")
    tls12 = parse_profile("VersionTLS12", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384")
    server = server_context(pair.cert_pem, pair.key_pem, None, tls12)
    client = client_context(None, None, ca.root_pem)
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    obj = await handshake(server, client, "vm")
    cipher = obj.cipher()
    assert cipher is not None and cipher[0] == "ECDHE-ECDSA-AES256-GCM-SHA384"
    tls13_server = server_context(pair.cert_pem, pair.key_pem, None, parse_profile("VersionTLS13"))
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await handshake(tls13_server, client, "vm")  # client capped at 1.2


def test_bad_material_is_a_clear_error() -> None:
    with pytest.raises(TLSProfileError, match="invalid TLS certificate or key"):
        server_context("not a cert", "not a key", None)
    with pytest.raises(TLSProfileError, match="skip-verify cannot be combined"):
        client_context(None, None, CertificateAuthority().root_pem, skip_verify=True)


def test_agent_tls_modes(tmp_path: object) -> None:
    import pathlib

    base = pathlib.Path(str(tmp_path))
    auto = AgentTLS()
    assert auto.automatic and auto.server_name("podvm-a-1") == "podvm-a-1"
    material = auto.server_material("podvm-a-1")
    assert material.server_cert and material.server_key and material.client_ca

    ca = CertificateAuthority()
    client = new_client_certificate()
    (base / "ca.crt").write_text(ca.root_pem)
    (base / "client.crt").write_text(client.cert_pem)
    (base / "client.key").write_text(client.key_pem)
    manual = AgentTLS(ca_cert_file=str(base / "ca.crt"), cert_file=str(base / "client.crt"),
                      cert_key=str(base / "client.key"))
    assert not manual.automatic
    assert manual.server_name("podvm-a-1") == "podvm-server"
    assert manual.server_material("podvm-a-1").server_cert == ""  # baked into the image

    off = AgentTLS(disabled=True)
    assert off.client_context() is None and off.server_name("x") is None

    with pytest.raises(TLSProfileError, match="cannot be combined"):
        AgentTLS(ca_cert_file=str(base / "ca.crt"), skip_verify=True)
    with pytest.raises(TLSProfileError, match="must be given together"):
        AgentTLS(cert_file=str(base / "client.crt"))
    with pytest.raises(TLSProfileError, match="cannot read CA certificate"):
        AgentTLS(ca_cert_file=str(base / "missing.crt"))
