"""The webhook's two listeners: ``POST /mutate-v1-pod`` over HTTPS, ``/healthz`` and
``/readyz`` over HTTP; and the serving certificate, reloaded when its files change (a
cert-manager renewal rewrites the mounted secret)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from pathlib import Path

from aiohttp import web

from runtime.tlsprofile import TLSProfile, TLSProfileError, load_cert_chain_pem
from webhook import review
from webhook.config import WebhookSettings, parse_address
from webhook.mutate import PodError, mutate

log = logging.getLogger(__name__)

MUTATE_PATH = "/mutate-v1-pod"

Signature = tuple[tuple[int, int, int], ...]


class CertReloader:
    """An SSL context serving the certificate in ``cert``/``key``, reloaded on change.

    A reload that fails (files half written, key not matching) keeps the current certificate
    and is tried again at the next :meth:`check`.
    """

    def __init__(self, cert: Path, key: Path, profile: TLSProfile) -> None:
        self.cert, self.key = cert, key
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        profile.apply(self.context)
        self._signature: Signature | None = None

    def load(self) -> None:
        """The first load; a :class:`TLSProfileError` when the files cannot be used."""
        if not self.check():
            raise TLSProfileError(
                f"cannot load the serving certificate {self.cert} and key {self.key}")

    def _stat(self) -> Signature:
        stats = (os.stat(self.cert), os.stat(self.key))
        return tuple((s.st_ino, s.st_mtime_ns, s.st_size) for s in stats)

    def check(self) -> bool:
        """Load the files if they changed; False when they cannot be loaded.

        The PEM is read once and tried on a scratch context first: a failed load must not
        leave the serving context with a new certificate and the old key.
        """
        try:
            signature = self._stat()
            if signature == self._signature:
                return True
            cert, key = self.cert.read_bytes(), self.key.read_bytes()
            load_cert_chain_pem(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), cert, key)
        except (OSError, TLSProfileError) as exc:
            log.error("serving certificate %s: cannot load: %s", self.cert, exc)
            return False
        load_cert_chain_pem(self.context, cert, key)  # new handshakes use it
        if self._signature is not None:
            log.info("serving certificate %s: reloaded", self.cert)
        self._signature = signature
        return True

    async def watch(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.check()


class WebhookServer:
    """Both listeners and the certificate watch; ``start()`` then ``aclose()``."""

    def __init__(self, settings: WebhookSettings, profile: TLSProfile) -> None:
        self.settings = settings
        cert_dir = Path(settings.cert_dir)
        self.certs = CertReloader(cert_dir / settings.cert_name, cert_dir / settings.key_name,
                                  profile)
        self._runners: list[web.AppRunner] = []
        self._watch: asyncio.Task[None] | None = None
        self.webhook_port = 0
        self.probe_port = 0

    def webhook_app(self) -> web.Application:
        app = web.Application(client_max_size=review.MAX_BODY + 1)
        app.router.add_post(MUTATE_PATH, self.handle_mutate)
        return app

    @staticmethod
    def probe_app() -> web.Application:
        async def ok(_: web.Request) -> web.Response:
            return web.Response(text="ok")
        app = web.Application()
        app.router.add_get("/healthz", ok)
        app.router.add_get("/readyz", ok)
        return app

    async def handle_mutate(self, request: web.Request) -> web.Response:
        uid = ""
        try:
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                raise review.ReviewError(
                    f"request entity is too large; limit is {review.MAX_BODY} bytes", 413
                ) from None
            admission = review.parse(body, request.content_type)
            uid = admission.uid
            result = mutate(admission.object, self.settings.target_runtime_class,
                            self.settings.extended_resource)
        except review.ReviewError as exc:
            log.warning("admission review from %s refused: %s", request.remote, exc)
            return _json(review.denied(uid, exc.code, str(exc)))
        except PodError as exc:
            log.warning("pod=%s/%s: refused: %s", admission.namespace, admission.name, exc)
            return _json(review.denied(uid, 400, str(exc)))
        if result.totals is not None:
            log.info("pod=%s/%s: %s; %d patch operation(s)", admission.namespace,
                     admission.name, result.totals.describe(), len(result.patch))
        return _json(review.allowed(uid, result.patch))

    async def _site(self, app: web.Application, address: str,
                    context: ssl.SSLContext | None) -> int:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self._runners.append(runner)
        host, port = parse_address(address)
        site = web.TCPSite(runner, host, port, ssl_context=context)
        await site.start()
        return int(runner.addresses[0][1])  # the bound port, when port 0 was asked for

    async def start(self) -> None:
        self.certs.load()
        try:
            self.webhook_port = await self._site(
                self.webhook_app(), self.settings.webhook_bind_address, self.certs.context)
            self.probe_port = await self._site(
                self.probe_app(), self.settings.probe_bind_address, None)
        except BaseException:
            await self.aclose()
            raise
        interval = self.settings.cert_poll_interval.total_seconds()
        self._watch = asyncio.create_task(self.certs.watch(interval))
        log.info("serving %s on %s (HTTPS), probes on %s", MUTATE_PATH,
                 self.settings.webhook_bind_address, self.settings.probe_bind_address)

    async def aclose(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        while self._runners:
            await self._runners.pop().cleanup()

    async def __aenter__(self) -> WebhookServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _json(body: bytes) -> web.Response:
    return web.Response(body=body, content_type=review.CONTENT_TYPE)
