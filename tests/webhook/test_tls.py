"""TLS of the webhook listener: the test CA's certificate, TLS_MIN_VERSION and
TLS_CIPHER_SUITES, a renewed certificate picked up without a restart, and the probes."""

from __future__ import annotations

import asyncio
import ssl
from datetime import timedelta

import aiohttp
import pytest
from cryptography import x509

from runtime.tlsprofile import TLSProfileError, parse_profile
from tests.webhook.conftest import SERVER_NAME, Running, WebhookPki, make_settings, start
from tests.webhook.test_malformed import assert_still_serving
from webhook.server import CertReloader, WebhookServer


async def handshake(port: int, context: ssl.SSLContext) -> ssl.SSLObject:
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context,
                                                   server_hostname=SERVER_NAME)
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        assert ssl_object is not None
        return ssl_object
    finally:
        writer.close()
        await writer.wait_closed()


async def served_serial(port: int, pki: WebhookPki) -> int:
    der = (await handshake(port, pki.client_context())).getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def serial(pem: str) -> int:
    return x509.load_pem_x509_certificate(pem.encode()).serial_number


async def test_client_without_the_ca_is_refused(webhook: Running) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        await handshake(webhook.server.webhook_port, ssl.create_default_context())


async def test_tls13_minimum(pki: WebhookPki) -> None:
    async for running in start(pki, make_settings(pki, {"TLS_MIN_VERSION": "VersionTLS13"})):
        old = pki.client_context()
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await handshake(running.server.webhook_port, old)
        ok = await handshake(running.server.webhook_port, pki.client_context())
        assert ok.version() == "TLSv1.3"


async def test_cipher_suites(pki: WebhookPki) -> None:
    suite = "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"
    settings = make_settings(pki, {"TLS_CIPHER_SUITES": f" {suite} "})
    async for running in start(pki, settings):
        client = pki.client_context()
        client.maximum_version = ssl.TLSVersion.TLSv1_2
        tls = await handshake(running.server.webhook_port, client)
        assert tls.cipher()[0] == "ECDHE-ECDSA-AES256-GCM-SHA384"
        client.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await handshake(running.server.webhook_port, client)


def test_invalid_tls_profiles_are_refused() -> None:
    with pytest.raises(TLSProfileError, match=r"TLS 1\.0 and 1\.1 are not supported"):
        parse_profile("VersionTLS11", "")
    with pytest.raises(TLSProfileError, match="cipher suite TLS_NOPE"):
        parse_profile("", "TLS_NOPE")


async def test_renewed_certificate_is_served_without_restart(pki: WebhookPki) -> None:
    first = pki.issue()
    pki.install(first)
    settings = make_settings(pki, cert_poll_interval="20ms")
    async for running in start(pki, settings):
        port = running.server.webhook_port
        assert await served_serial(port, pki) == serial(first.cert_pem)
        second = pki.issue()
        pki.install(second)
        deadline = asyncio.get_running_loop().time() + 10
        served = await served_serial(port, pki)
        while served != serial(second.cert_pem) and asyncio.get_running_loop().time() < deadline:
            served = await served_serial(port, pki)  # each handshake is a poll
        assert served == serial(second.cert_pem)
        await assert_still_serving(running)


async def test_broken_certificate_files_keep_the_current_certificate(pki: WebhookPki) -> None:
    first = pki.issue()
    pki.install(first)
    async for running in start(pki, make_settings(pki, cert_poll_interval="1h")):
        certs = running.server.certs
        other = pki.issue()
        (pki.cert_dir / "tls.crt").write_text(other.cert_pem)  # key not yet written
        assert certs.check() is False
        assert await served_serial(running.server.webhook_port, pki) == serial(first.cert_pem)
        (pki.cert_dir / "tls.key").write_text(other.key_pem)
        assert certs.check() is True
        assert await served_serial(running.server.webhook_port, pki) == serial(other.cert_pem)


async def test_missing_certificate_is_a_startup_error(pki: WebhookPki) -> None:
    (pki.cert_dir / "tls.key").unlink()
    server = WebhookServer(make_settings(pki), parse_profile())
    with pytest.raises(TLSProfileError, match="cannot load the serving certificate"):
        await server.start()
    with pytest.raises(TLSProfileError, match="cannot load the serving certificate"):
        CertReloader(pki.cert_dir / "tls.crt", pki.cert_dir / "tls.key", parse_profile()).load()


async def test_probes(pki: WebhookPki) -> None:
    settings = make_settings(pki)
    async with WebhookServer(settings, parse_profile()) as server, aiohttp.ClientSession() as s:
        for path in ("/healthz", "/readyz"):
            async with s.get(f"http://127.0.0.1:{server.probe_port}{path}") as response:
                assert response.status == 200 and await response.text() == "ok"
        assert server.settings.cert_poll_interval == timedelta(seconds=10)
