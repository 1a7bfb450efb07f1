"""HTTP on ``127.0.0.1:PROBE_PORT``: ``/startup``, ``/healthz`` and ``/metrics``.

The listener sets SO_REUSEPORT, so an old and a new adaptor can share the port during a
rolling update (as upstream's probe does).
- ``/startup``: 200 once the restore is done and the hypervisor socket answers and, with
  Kubernetes access, every peer pod on the node is Ready (:mod:`k8s.readiness`), else 503;
- ``/healthz``: 200 while the event loop runs and the hypervisor socket answers, else 503;
- ``/metrics``: the daemon's Prometheus registry, text format.

The server is the standard library's, on a thread of its own: a web framework would double
the daemon's idle memory for three GET endpoints. The checks run on the daemon's event loop,
so an unresponsive loop makes ``/healthz`` fail by its timeout.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import TimeoutError as FutureTimeout
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from adaptor.metrics import Metrics

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[tuple[bool, str]]]
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
CHECK_TIMEOUT = 5.0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


class ProbeServer:
    def __init__(self, metrics: Metrics, *, startup: Check, health: Check) -> None:
        self._metrics = metrics
        self._startup = startup
        self._health = health
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        server = _Server((host, port), self._handler_class(loop))
        thread = threading.Thread(target=server.serve_forever, name="probe-http", daemon=True)
        thread.start()
        self._server, self._thread = server, thread
        self.port = int(server.server_address[1])
        log.info("probe server on http://%s:%d (/startup, /healthz, /metrics)", host, self.port)
        return self.port

    async def aclose(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await asyncio.to_thread(server.shutdown)
            server.server_close()

    def _handler_class(self, loop: asyncio.AbstractEventLoop) -> type[BaseHTTPRequestHandler]:
        probe = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._reply(200, probe._metrics.render(), PROMETHEUS_TEXT)
                elif path in ("/startup", "/healthz"):
                    check = probe._startup if path == "/startup" else probe._health
                    ok, text = probe._run_check(loop, check)
                    self._reply(200 if ok else 503, (text + "\n").encode(), "text/plain")
                else:
                    self._reply(404, b"not found\n", "text/plain")

            def _reply(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # probes every few seconds would flood the log

        return Handler

    @staticmethod
    def _run_check(loop: asyncio.AbstractEventLoop, check: Check) -> tuple[bool, str]:
        async def call() -> tuple[bool, str]:
            return await check()

        try:
            future = asyncio.run_coroutine_threadsafe(call(), loop)
        except RuntimeError:  # the loop is closed: the daemon is going away
            return False, "shutting down"
        try:
            return future.result(timeout=CHECK_TIMEOUT)
        except FutureTimeout:
            future.cancel()
            return False, f"event loop did not answer within {CHECK_TIMEOUT:.0f}s"
        except Exception as exc:
            return False, f"check failed: {exc}"
