"""The parts of a sandbox every operation uses: its record and state, kept in step through
the state table (:mod:`adaptor.states`), its lock, its agent proxy, its tunnel teardown and
its background clean-up task. :class:`adaptor.sandbox.Sandbox` adds the operations."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from adaptor.errors import StartFailed
from adaptor.lifecycle import SandboxContext
from adaptor.proxy import AgentProxy, ForwarderDialer
from adaptor.record import SandboxRecord
from adaptor.states import Event, SandboxState, State, advance
from protocols.apf import PodNetwork

log = logging.getLogger("adaptor.manager")

NO_NETWORK = PodNetwork(tunnel_type="none")


class SandboxCore:
    def __init__(
        self, ctx: SandboxContext, record: SandboxRecord,
        on_change: Callable[[Any], None] = lambda _s: None,
    ) -> None:
        self.id = record.sandbox_id
        self._ctx = ctx
        self._record = record
        self._state = record.machine_state()
        self._on_change = on_change
        self.lock = asyncio.Lock()
        self.proxy: AgentProxy | None = None
        self._starting: asyncio.Task[Any] | None = None
        self._cleanup: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ views
    @property
    def record(self) -> SandboxRecord:
        return self._record

    @property
    def state(self) -> State:
        return self._state

    @property
    def gone(self) -> bool:
        return self._state.phase is SandboxState.GONE

    def _step(self, event: Event, *, save: bool = True, **changes: Any) -> None:
        """Report a step to the state table; the record follows (and is written if asked)."""
        self._state = advance(self._state, event)
        record = self._record.replace(**changes) if changes else self._record
        self._record = record.with_state(self._state)
        if save and not self.gone:
            self.save()
        self._on_change(self)

    def save(self) -> None:
        if self._ctx.store is not None:
            self._ctx.store.save(self._record)

    def _adopt(self, record: SandboxRecord) -> None:
        """Take the record another adaptor process left behind (rolling update)."""
        self._record = record
        self._state = record.machine_state()
        self._on_change(self)

    def _pod_network(self) -> PodNetwork:
        return self._record.pod_network or NO_NETWORK

    def _make_proxy(self, ip: str) -> AgentProxy:
        ctx, record = self._ctx, self._record
        return AgentProxy(
            self.id,
            record.socket_path,
            ForwarderDialer(self.id, ip, ctx.config.forwarder_port, ctx.tls.client_context(),
                            record.server_name or None),
            proxy_timeout=ctx.config.proxy_timeout,
            metrics=ctx.metrics,
            direct_volumes_dir=ctx.config.direct_volumes_dir,
        )

    async def _wait_cleanup(self) -> None:
        cleanup = self._cleanup
        if cleanup is not None:
            await asyncio.shield(cleanup)
            if self._cleanup is cleanup:
                self._cleanup = None

    async def _teardown(self) -> bool:
        """Remove the worker end of the tunnel; on failure it stays recorded."""
        try:
            await self._ctx.network.teardown(self.id, self._record.netns_path,
                                             self._pod_network())
        except Exception as exc:
            log.error("sandbox=%s: tunnel teardown failed: %s", self.id, exc)
            return False
        self._step(Event.TUNNEL_REMOVED, save=False)
        return True

    async def _close_proxy(self) -> None:
        proxy, self.proxy = self.proxy, None
        if proxy is not None:
            await proxy.aclose()
        if self._state.holds.proxy:
            self._step(Event.PROXY_CLOSED, save=False)

    # ------------------------------------------------------------------ restart
    async def resume(self) -> None:
        """Serve a running sandbox's agent socket again (after a restart)."""
        async with self.lock:
            await self._resume()

    async def _resume(self) -> None:
        if not self._record.instance_ips:
            raise StartFailed(f"sandbox {self.id}: running record without instance IPs")
        await self._close_proxy()
        proxy = self._make_proxy(self._record.instance_ips[0])
        await proxy.resume()
        self.proxy = proxy
        self._step(Event.PROXY_UP, save=False)

    # ------------------------------------------------------------------ shutdown
    async def close_proxy(self) -> None:
        """Daemon shutdown: stop serving the agent socket (the pod VM keeps running)."""
        await self._close_proxy()

    async def wait_cleanup(self) -> None:
        cleanup = self._cleanup
        if cleanup is not None:
            await asyncio.gather(cleanup, return_exceptions=True)
