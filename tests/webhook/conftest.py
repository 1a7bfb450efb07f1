"""A real webhook server on loopback ports, serving a certificate from a test CA."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from runtime.settings import parse_settings
from runtime.tlsprofile import parse_profile
from tests.forwarder.apf.helpers import KeyPair, issue_server_cert, make_ca
from webhook.config import WebhookSettings
from webhook.server import WebhookServer

SERVER_NAME = "localhost"


@dataclass
class WebhookPki:
    ca: KeyPair
    issue: Callable[[], KeyPair]  # a new server certificate from the same CA
    cert_dir: Path

    def install(self, pair: KeyPair) -> None:
        (self.cert_dir / "tls.crt").write_text(pair.cert_pem)
        (self.cert_dir / "tls.key").write_text(pair.key_pem)

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.ca.cert_pem)


@pytest.fixture
def pki(tmp_path: Path) -> WebhookPki:
    ca, ca_key = make_ca("peerpods-webhook-test-ca")
    cert_dir = tmp_path / "serving-certs"
    cert_dir.mkdir()
    out = WebhookPki(ca, lambda: issue_server_cert(ca, ca_key, SERVER_NAME), cert_dir)
    out.install(out.issue())
    return out


def make_settings(pki: WebhookPki, env: dict[str, str] | None = None, **flags: str
                  ) -> WebhookSettings:
    argv = ["-webhook-bind-address", "127.0.0.1:0", "-health-probe-bind-address",
            "127.0.0.1:0", "-cert-dir", str(pki.cert_dir)]
    for name, value in flags.items():
        argv += [f"-{name.replace('_', '-')}", value]
    return parse_settings(WebhookSettings, argv, env or {})


@dataclass
class Running:
    server: WebhookServer
    session: aiohttp.ClientSession
    pki: WebhookPki

    @property
    def url(self) -> str:
        return f"https://{SERVER_NAME}:{self.server.webhook_port}/mutate-v1-pod"

    async def post(self, body: bytes, content_type: str = "application/json"
                   ) -> tuple[int, dict[str, Any]]:
        async with self.session.post(self.url, data=body,
                                     headers={"Content-Type": content_type}) as response:
            return response.status, await response.json()


async def start(pki: WebhookPki, settings: WebhookSettings) -> AsyncIterator[Running]:
    profile = parse_profile(settings.tls_min_version, settings.tls_cipher_suites)
    async with WebhookServer(settings, profile) as server:
        connector = aiohttp.TCPConnector(ssl=pki.client_context(), force_close=True,
                                         resolver=LoopbackResolver())
        async with aiohttp.ClientSession(connector=connector) as session:
            yield Running(server, session, pki)


class LoopbackResolver(aiohttp.abc.AbstractResolver):
    """``localhost`` is 127.0.0.1, whatever /etc/hosts says (the certificate names it)."""

    async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[Any]:
        return [{"hostname": host, "host": "127.0.0.1", "port": port, "family": 2,
                 "proto": 0, "flags": 0}]

    async def close(self) -> None:
        return None


@pytest.fixture
async def webhook(pki: WebhookPki) -> AsyncIterator[Running]:
    async for running in start(pki, make_settings(pki)):
        yield running


POLL = timedelta(milliseconds=20)
