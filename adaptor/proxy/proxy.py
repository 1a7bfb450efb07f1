"""One sandbox's agent proxy.

The shim connects (any number of times) to ``<pods-dir>/<sid>/agent.ttrpc``; every
``grpc.AgentService`` and ``grpc.Health`` call is relayed over ONE ttrpc client connection to
the pod VM's forwarder, payload bytes untouched, keeping service, method, metadata and the
remaining deadline. Error statuses come back unchanged. The proxy adds no deadline of its own.

Beyond upstream: when the forwarder connection drops, the call in flight fails with
UNAVAILABLE and the next call dials again (bounded by its deadline, else the proxy timeout).
After an adaptor restart, :meth:`AgentProxy.resume` listens at once and dials in the
background. The proxy removes its socket file on close only if the file is still the one it
bound (a newer adaptor may have taken the path over during a rolling update).
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
from protocols.ttrpc import CallContext, Client, Code, ConnectionClosed, Server, TTRPCError

if TYPE_CHECKING:
    from adaptor.metrics import Metrics

log = logging.getLogger(__name__)

AGENT_SERVICE = "grpc.AgentService"
HEALTH_SERVICE = "grpc.Health"


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
        self._client: Client | None = None
        self._dial_lock = asyncio.Lock()
        self._server: Server | None = None
        self._socket_id: tuple[int, int] | None = None
        self._warmup: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def ready(self) -> bool:
        return self._server is not None and not self._closed

    @property
    def upstream_connected(self) -> bool:
        return self._client is not None and not self._client.closed

    async def start(self, timeout: float | None = None) -> None:
        """Wait until the forwarder answers, then listen on the agent socket."""
        try:
            self._client = await self._dial(self._proxy_timeout if timeout is None else timeout)
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
        server = Server()
        server.register_raw(AGENT_SERVICE, self._forward)
        server.register_raw(HEALTH_SERVICE, self._forward)
        server.register_raw(f"{AGENT_SERVICE}/CreateContainer", self._create_container)
        _prepare_socket_path(self.socket_path)
        await server.start_unix(self.socket_path, mode=0o600)
        self._server = server
        self._socket_id = _file_id(self.socket_path)

    async def _warm_up(self) -> None:
        async with self._dial_lock:
            if self._closed or self.upstream_connected:
                return
            try:
                client = await self._dial(self._proxy_timeout)
            except DialTimeout as exc:
                log.warning("sandbox=%s: forwarder not reachable after restart: %s",
                            self.sandbox_id, exc)
                return
            if self._closed:
                await client.aclose()
                return
            self._client = client

    async def _dial(self, timeout: float) -> Client:
        try:
            client = await self._dialer.dial(timeout)
        except DialTimeout:
            if self._metrics is not None:
                self._metrics.proxy_dials.labels("timeout").inc()
            raise
        if self._metrics is not None:
            self._metrics.proxy_dials.labels("ok").inc()
        return client

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
        client, self._client = self._client, None
        if server is not None:
            await server.shutdown(grace=1.0)
        if client is not None:
            await client.aclose()
        if owned:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket_path)
        self._socket_id = None

    async def _upstream(self, ctx: CallContext) -> Client:
        client = self._client
        if client is not None and not client.closed:
            return client
        async with self._dial_lock:
            client = self._client
            if client is not None and not client.closed:
                return client
            if self._closed:
                raise TTRPCError(Code.UNAVAILABLE, "agent proxy is shutting down")
            remaining = ctx.remaining()
            timeout = self._proxy_timeout if remaining is None else remaining
            log.info(
                "sandbox=%s: forwarder connection lost; reconnecting to %s",
                self.sandbox_id, self._dialer.address,
            )
            try:
                client = await self._dial(timeout)
            except DialTimeout as exc:
                raise TTRPCError(Code.UNAVAILABLE, f"cannot reach the pod VM: {exc}") from None
            if self._closed:
                await client.aclose()
                raise TTRPCError(Code.UNAVAILABLE, "agent proxy is shutting down")
            self._client = client
            return client

    async def _forward(self, ctx: CallContext, payload: bytes) -> bytes:
        if ctx.method in LOG_ONLY:
            log.info("sandbox=%s: %s", self.sandbox_id, ctx.method)
        return await self._relay(ctx, payload)

    async def _create_container(self, ctx: CallContext, payload: bytes) -> bytes:
        return await self._relay(ctx, rewrite_create_container(
            self.sandbox_id, payload, direct_volumes_dir=self._direct_volumes_dir))

    async def _relay(self, ctx: CallContext, payload: bytes) -> bytes:
        metrics = self._metrics
        try:
            client = await self._upstream(ctx)
            if metrics is not None:
                metrics.proxy_bytes.labels("to_agent").inc(len(payload))
            response = await client.forward(ctx, payload)
        except TTRPCError as exc:
            if metrics is not None:
                metrics.proxy_calls.labels(_code_name(exc.code)).inc()
            raise
        except ConnectionClosed as exc:
            if metrics is not None:
                metrics.proxy_calls.labels("connection_closed").inc()
            log.warning(
                "sandbox=%s: %s/%s: forwarder connection closed: %s",
                self.sandbox_id, ctx.service, ctx.method, exc,
            )
            raise TTRPCError(
                Code.UNAVAILABLE, f"connection to the pod VM's forwarder closed: {exc}"
            ) from None
        if metrics is not None:
            metrics.proxy_calls.labels("ok").inc()
            metrics.proxy_bytes.labels("from_agent").inc(len(response))
        return response


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
