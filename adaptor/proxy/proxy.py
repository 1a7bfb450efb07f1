"""One sandbox's agent proxy.

The shim connects (any number of times) to ``<pods-dir>/<sid>/agent.ttrpc``; every
``grpc.AgentService`` and ``grpc.Health`` call is relayed frame by frame to the pod VM's
forwarder (:mod:`protocols.ttrpc.relay`): each shim connection gets its own forwarder
connection, and frames pass both ways unchanged, stream ids, deadlines and metadata included.
Only ``CreateContainer`` is decoded (see :mod:`adaptor.proxy.intercept`). Error statuses come
back unchanged. The proxy adds no deadline of its own.

Beyond upstream: when the forwarder connection drops, the calls in flight fail with
UNAVAILABLE and the next call dials again (bounded by its deadline, else the proxy timeout).
The forwarder connection made by :meth:`AgentProxy.start` (the readiness check) serves the
first shim connection. After an adaptor restart, :meth:`AgentProxy.resume` listens at once
and dials in the background. The proxy removes its socket file on close only if the file is
still the one it bound (a newer adaptor may have taken the path over during a rolling update).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import TYPE_CHECKING

from adaptor.proxy.dialer import DialTimeout, ForwarderDialer
from adaptor.proxy.intercept import LOG_ONLY, rewrite_create_container
from adaptor.volumes import DIRECT_VOLUMES_DIR
from protocols.ttrpc import CallContext, Code, TTRPCError
from protocols.ttrpc.relay import RelayConnection, RelayPolicy, RelayServer, Upstream

if TYPE_CHECKING:
    from adaptor.metrics import Metrics

log = logging.getLogger(__name__)

AGENT_SERVICE = "grpc.AgentService"
HEALTH_SERVICE = "grpc.Health"
CONNECTION_CLOSED = "connection to the pod VM's forwarder closed: ttrpc: closed"


class AgentProxy:
    """``start()`` dials the forwarder (with backoff) and then opens the unix listener."""

    def __init__(
        self,
        sandbox_id: str,
        socket_path: str,
        dialer: ForwarderDialer,
        *,
        proxy_timeout: float,
        metrics: Metrics | None = None,
        direct_volumes_dir: str = DIRECT_VOLUMES_DIR,
    ) -> None:
        self.sandbox_id = sandbox_id
        self._direct_volumes_dir = direct_volumes_dir
        self.socket_path = socket_path
        self._dialer = dialer
        self._proxy_timeout = proxy_timeout
        self._metrics = metrics
        self._spare: Upstream | None = None  # dialled, not yet given to a shim connection
        self._dial_lock = asyncio.Lock()
        self._server: RelayServer | None = None
        self._socket_id: tuple[int, int] | None = None
        self._warmup: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def ready(self) -> bool:
        return self._server is not None and not self._closed

    @property
    def upstream_connected(self) -> bool:
        if self._spare is not None and self._spare.is_open:
            return True
        server = self._server
        return server is not None and any(
            conn.up is not None and conn.up.is_open for conn in server.connections)

    async def start(self, timeout: float | None = None) -> None:
        """Wait until the forwarder answers, then listen on the agent socket."""
        try:
            self._spare = await self._dial(self._proxy_timeout if timeout is None else timeout)
            await self._listen()
        except BaseException:
            await asyncio.shield(self.aclose())
            raise
        log.info("sandbox=%s: agent proxy listening on %s", self.sandbox_id, self.socket_path)

    async def resume(self) -> None:
        """After a restart: listen on the agent socket now, reconnect in the background.

        Calls that arrive before the forwarder answers wait for that connection (bounded by
        their own deadline, else the proxy timeout)."""
        try:
            await self._listen()
        except BaseException:
            await asyncio.shield(self.aclose())
            raise
        self._warmup = asyncio.create_task(self._warm_up())
        log.info("sandbox=%s: agent proxy listening again on %s", self.sandbox_id,
                 self.socket_path)

    async def _listen(self) -> None:
        server = RelayServer(RelayPolicy(
            services=frozenset({AGENT_SERVICE, HEALTH_SERVICE}),
            connect=self._connect,
            lost=CONNECTION_CLOSED,
            hooks={"CreateContainer": self._create_container},
            observed=frozenset(LOG_ONLY),
            observe=self._observe,
            on_lost=self._on_lost,
            account=None if self._metrics is None else self._account,
        ), on_idle=self._keep_spare)
        _prepare_socket_path(self.socket_path)
        await server.start_unix(self.socket_path, mode=0o600)
        self._server = server
        self._socket_id = _file_id(self.socket_path)

    async def _warm_up(self) -> None:
        async with self._dial_lock:
            if self._closed or self.upstream_connected:
                return
            try:
                spare = await self._dial(self._proxy_timeout)
            except DialTimeout as exc:
                log.warning("sandbox=%s: forwarder not reachable after restart: %s",
                            self.sandbox_id, exc)
                return
            if self._closed:
                spare.close()
                return
            self._spare = spare

    async def _dial(self, timeout: float) -> Upstream:
        try:
            up = await self._dialer.dial_protocol(timeout, Upstream)
        except DialTimeout:
            if self._metrics is not None:
                self._metrics.proxy_dials.labels("timeout").inc()
            raise
        if self._metrics is not None:
            self._metrics.proxy_dials.labels("ok").inc()
        return up

    @property
    def owns_socket(self) -> bool:
        """True while the socket file is still the one this proxy bound."""
        return self._socket_id is not None and _file_id(self.socket_path) == self._socket_id

    async def aclose(self) -> None:
        """Stop listening and drop the forwarder connection. Safe to call twice.

        The socket file is removed only if it is still ours."""
        self._closed = True
        warmup, self._warmup = self._warmup, None
        if warmup is not None:
            warmup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await warmup
        owned = self.owns_socket
        server, self._server = self._server, None
        spare, self._spare = self._spare, None
        if server is not None:
            await server.shutdown(grace=1.0)
        if spare is not None:
            spare.close()
        if owned:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket_path)
        self._socket_id = None

    async def _connect(self, down: RelayConnection, deadline: float | None) -> Upstream:
        """The forwarder connection for one shim connection (the readiness one, if open)."""
        async with self._dial_lock:  # (a dial in the background may be making the spare)
            spare, self._spare = self._spare, None
            if spare is not None and spare.is_open:
                return spare
            if self._closed:
                raise TTRPCError(Code.UNAVAILABLE, "agent proxy is shutting down")
            loop = asyncio.get_running_loop()
            timeout = self._proxy_timeout if deadline is None else max(0.0, deadline - loop.time())
            log.info("sandbox=%s: %s to %s", self.sandbox_id,
                     "forwarder connection lost; reconnecting" if down.connects
                     else "new agent connection; connecting", self._dialer.address)
            try:
                up = await self._dial(timeout)
            except DialTimeout as exc:
                raise TTRPCError(Code.UNAVAILABLE, f"cannot reach the pod VM: {exc}") from None
            if self._closed:
                up.close()
                raise TTRPCError(Code.UNAVAILABLE, "agent proxy is shutting down")
            return up

    def _keep_spare(self, up: Upstream) -> None:
        """A shim connection closed while its forwarder connection is idle: keep that one
        for the next shim connection."""
        if self._closed or (self._spare is not None and self._spare.is_open):
            up.close()
        else:
            self._spare = up

    def _observe(self, method: str) -> None:
        log.info("sandbox=%s: %s", self.sandbox_id, method)

    def _create_container(self, ctx: CallContext, payload: bytes) -> bytes:
        return rewrite_create_container(
            self.sandbox_id, payload, direct_volumes_dir=self._direct_volumes_dir)

    def _on_lost(self, calls: int, reason: str) -> None:
        log.warning("sandbox=%s: forwarder connection closed with %d call(s) in flight: %s",
                    self.sandbox_id, calls, reason)

    def _account(self, kind: str, nbytes: int, code: int) -> None:
        metrics = self._metrics
        assert metrics is not None
        if kind == "to_agent":
            metrics.proxy_bytes.labels("to_agent").inc(nbytes)
            return
        if kind == "from_agent":
            metrics.proxy_bytes.labels("from_agent").inc(nbytes)
        label = "connection_closed" if code < 0 else "ok" if code == 0 else _code_name(code)
        metrics.proxy_calls.labels(label).inc()


def _prepare_socket_path(path: str) -> None:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _file_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _code_name(code: int) -> str:
    try:
        return Code(code).name.lower()
    except ValueError:
        return f"code_{code}"
