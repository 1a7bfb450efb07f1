"""Dial a pod VM's forwarder: TCP (+TLS) to ``<ip>:<port>``, retried with backoff.

Readiness is the first connection that completes (TCP connect and, with TLS, the handshake),
as upstream. Backoff is exponential with jitter, starting at 100 ms and capped at 5 s.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from dataclasses import dataclass

from adaptor.errors import AdaptorError
from protocols.ttrpc import Client

log = logging.getLogger(__name__)

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

    async def dial(self, timeout: float) -> Client:
        """Retry :meth:`connect_once` until it succeeds or ``timeout`` seconds pass."""
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
                client = await self.connect_once(min(ATTEMPT_TIMEOUT, remaining))
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
                return client
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
