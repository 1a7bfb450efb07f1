"""Dial a pod VM's forwarder: TCP (+TLS) to ``<ip>:<port>``, retried with backoff.

Readiness is the first connection that completes (TCP connect and, with TLS, the handshake),
as upstream. Backoff is exponential with jitter, starting at 100 ms and capped at 5 s.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from adaptor.errors import AdaptorError
from protocols.ttrpc import Client

log = logging.getLogger(__name__)

P = TypeVar("P", bound=asyncio.BaseProtocol)
T = TypeVar("T")

INITIAL_DELAY = 0.1
# Upstream caps the backoff at 5 s; a pod VM that comes up just after a try then waits up to
# that long for the next one. A connect attempt costs the VM almost nothing, so try at least
# every 2 s: StartVM returns sooner once the forwarder listens.
MAX_DELAY = 2.0
ATTEMPT_TIMEOUT = 10.0  # one TCP connect + TLS handshake


class DialTimeout(AdaptorError):
    """The forwarder did not answer before the deadline; carries the last failure."""


@dataclass(frozen=True, slots=True)
class ForwarderDialer:
    """How to reach one pod VM's forwarder."""

    sandbox_id: str
    host: str
    port: int
    ssl_context: ssl.SSLContext | None = None
    server_hostname: str | None = None
    max_delay: float = MAX_DELAY

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}" if ":" not in self.host else f"[{self.host}]:{self.port}"

    async def connect_once(self, timeout: float = ATTEMPT_TIMEOUT) -> Client:
        async with asyncio.timeout(timeout):
            return await Client.connect_tcp(
                self.host, self.port, ssl=self.ssl_context, server_hostname=self.server_hostname
            )

    async def open_once(self, factory: Callable[[], P], timeout: float = ATTEMPT_TIMEOUT) -> P:
        """One connection whose protocol ``factory`` makes (TCP_NODELAY set)."""
        loop = asyncio.get_running_loop()
        kwargs: dict[str, Any] = {}
        if self.ssl_context is not None:
            kwargs["ssl"] = self.ssl_context
            kwargs["server_hostname"] = self.server_hostname or self.host
        async with asyncio.timeout(timeout):
            transport, protocol = await loop.create_connection(factory, self.host, self.port,
                                                               **kwargs)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return protocol

    async def dial(self, timeout: float) -> Client:
        """Retry :meth:`connect_once` until it succeeds or ``timeout`` seconds pass."""
        return await self._retry(timeout, self.connect_once)

    async def dial_protocol(self, timeout: float, factory: Callable[[], P]) -> P:
        """Retry :meth:`open_once` until it succeeds or ``timeout`` seconds pass."""
        return await self._retry(timeout, lambda limit: self.open_once(factory, limit))

    async def _retry(self, timeout: float, attempt_once: Callable[[float], Awaitable[T]]) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = INITIAL_DELAY
        attempt = 0
        last: BaseException | None = None
        while True:
            attempt += 1
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            log.debug("sandbox=%s: dialing forwarder %s (attempt %d)", self.sandbox_id,
                      self.address, attempt)
            try:
                connection = await attempt_once(min(ATTEMPT_TIMEOUT, remaining))
            except ssl.SSLCertVerificationError as exc:
                last = exc
                log.warning(
                    "sandbox=%s: forwarder %s presented a certificate that does not verify: %s",
                    self.sandbox_id, self.address, exc.verify_message or exc,
                )
            except (OSError, TimeoutError, ssl.SSLError, EOFError) as exc:
                last = exc
                log.debug(
                    "sandbox=%s: dial %s attempt %d failed: %s",
                    self.sandbox_id, self.address, attempt, exc or type(exc).__name__,
                )
            else:
                log.info(
                    "sandbox=%s: connected to forwarder %s after %d attempt(s)",
                    self.sandbox_id, self.address, attempt,
                )
                return connection
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await asyncio.sleep(min(delay * (0.5 + random.random() / 2), remaining))
            delay = min(delay * 2, self.max_delay)
        reason = f"{type(last).__name__}: {last}" if last is not None else "no attempt made"
        raise DialTimeout(
            f"the forwarder at {self.address} did not answer within {timeout:g}s "
            f"({attempt} attempts; last error: {reason})"
        )
