"""HTTP on ``127.0.0.1:PROBE_PORT``: ``/startup``, ``/healthz`` and ``/metrics``.

The listener sets SO_REUSEPORT, so an old and a new adaptor can share the port during a
rolling update (as upstream's probe does).
- ``/startup``: 200 once the restore is done and the hypervisor socket answers, else 503;
- ``/healthz``: 200 while the event loop runs and the hypervisor socket answers, else 503;
- ``/metrics``: the daemon's Prometheus registry, text format.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from adaptor.metrics import Metrics

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[tuple[bool, str]]]
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


class ProbeServer:
    def __init__(self, metrics: Metrics, *, startup: Check, health: Check) -> None:
        self._metrics = metrics
        self._startup = startup
        self._health = health
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        app = web.Application()
        app.router.add_get("/startup", self._on_startup)
        app.router.add_get("/healthz", self._on_health)
        app.router.add_get("/metrics", self._on_metrics)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port, reuse_port=True)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        log.info("probe server on http://%s:%d (/startup, /healthz, /metrics)", host, self.port)
        return self.port

    async def aclose(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @staticmethod
    async def _answer(check: Check) -> web.Response:
        ok, text = await check()
        return web.Response(status=200 if ok else 503, text=text + "\n")

    async def _on_startup(self, request: web.Request) -> web.Response:
        return await self._answer(self._startup)

    async def _on_health(self, request: web.Request) -> web.Response:
        return await self._answer(self._health)

    async def _on_metrics(self, request: web.Request) -> web.Response:
        response = web.Response(body=self._metrics.render())
        response.headers["Content-Type"] = PROMETHEUS_TEXT
        return response
