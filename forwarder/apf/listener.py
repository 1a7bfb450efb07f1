"""The forwarder's TCP listener: admission control before a connection reaches the server.

The forwarder listens on every address of the pod VM, so anyone who can reach port 15150
can open connections. Until a client finishes the TLS handshake (and so, with a client CA,
has proven it holds the adaptor's key) its connection is *unauthenticated*, and these are
bounded:

- the handshake must finish within :attr:`AdmissionLimits.handshake_timeout` seconds;
- one source (an IPv4 address, an IPv6 /64) may have at most ``per_source`` handshakes
  open; more connections from it are closed at once;
- at most ``total`` handshakes are open in all; a newcomer beyond that evicts the oldest
  handshake of the source holding the most, so a flood cannot fill the table and keep
  a new client (the real adaptor) out.

Authenticated connections are handed to the ttrpc server and are not counted. Without TLS
(``-disable-tls``) there is nothing to authenticate and connections go straight through.
``RLIMIT_NOFILE`` is raised to its hard limit at start, so refusing floods does not run out
of descriptors.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import resource
import socket
import ssl as ssl_module
import struct
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

_ACCEPT_RETRY_DELAY = 0.1
_ACCEPT_BATCH = 16
_REFUSAL_LOG_INTERVAL = 10.0
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    handshake_timeout: float = 5.0
    per_source: int = 16
    total: int = 128
    backlog: int = 1024


class SocketServer(Protocol):
    """What serves an accepted connection (a ttrpc server or relay)."""

    async def accept_socket(
        self, sock: socket.socket, *, ssl: ssl_module.SSLContext | None = None
    ) -> None: ...


def raise_nofile_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft >= hard:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        log.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, exc)
        return soft
    log.info("raised the open-file limit from %d to %d", soft, hard)
    return hard


def source_key(address: tuple[str, int] | tuple[str, int, int, int]) -> str:
    """What the per-source cap counts: the IPv4 address, or the /64 of an IPv6 address."""
    host = address[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is None:
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip.ipv4_mapped or ip) if isinstance(ip, ipaddress.IPv6Address) else str(ip)


def _reset(sock: socket.socket) -> None:
    """Close with RST, so the descriptor and the kernel state go away at once."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class GuardedListener:
    """Accepts TCP connections for ``server``, bounding the ones still in the TLS handshake."""

    def __init__(
        self, server: SocketServer, ssl: ssl_module.SSLContext | None,
        limits: AdmissionLimits | None = None, *, label: str = "-",
    ) -> None:
        limits = limits or AdmissionLimits()
        if limits.per_source < 1 or limits.total < limits.per_source:
            raise ValueError("need 1 <= per_source <= total")
        self._server = server
        self._ssl = ssl
        self._limits = limits
        self._label = label
        self._sock: socket.socket | None = None
        self._accept_task: asyncio.Task[None] | None = None
        # source -> handshakes in arrival order (insertion order of an OrderedDict)
        self._pending: dict[str, OrderedDict[asyncio.Task[None], None]] = {}
        self._pending_total = 0
        self._started: set[asyncio.Task[None]] = set()
        self._plain: set[asyncio.Task[None]] = set()
        self.refused = 0
        self.evicted = 0
        self._last_refusal_log = float("-inf")

    @property
    def handshaking(self) -> int:
        return self._pending_total

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Bind and start accepting; returns the bound (host, port)."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
        family, _, _, _, sockaddr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
            sock.listen(self._limits.backlog)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._accept_task = asyncio.create_task(self._accept_loop(sock), name="apf-accept")
        address = sock.getsockname()
        return address[0], address[1]

    async def aclose(self) -> None:
        """Stop accepting and abandon every handshake still open."""
        task, self._accept_task = self._accept_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        pending = [t for tasks in self._pending.values() for t in tasks] + list(self._plain)
        for handshake in pending:
            handshake.cancel()
        if pending:
            await asyncio.wait(pending)

    async def _accept_loop(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        accepted = 0
        while True:
            accepted += 1
            if accepted % _ACCEPT_BATCH == 0:
                # sock_accept does not yield while connections are queued: let handshakes
                # and calls run between batches, or a flood would starve them.
                await asyncio.sleep(0)
            try:
                conn, address = await loop.sock_accept(sock)
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    log.warning("pod=%s: accept failed: %s", self._label, exc)
                else:
                    log.warning("pod=%s: accept failed, out of resources: %s; retrying in "
                                "%gs", self._label, exc, _ACCEPT_RETRY_DELAY)
                await asyncio.sleep(_ACCEPT_RETRY_DELAY)
                continue
            self._admit(conn, address)

    def _admit(self, conn: socket.socket, address: tuple[str, int]) -> None:
        if self._ssl is None:
            plain = asyncio.create_task(self._serve_plain(conn))
            self._plain.add(plain)
            plain.add_done_callback(self._plain.discard)
            return
        key = source_key(address)
        tasks = self._pending.setdefault(key, OrderedDict())
        if len(tasks) >= self._limits.per_source:
            _reset(conn)
            self.refused += 1
            self._note_pressure(key)
            if not tasks:
                del self._pending[key]
            return
        if self._pending_total >= self._limits.total:
            self._evict_one()
            self._note_pressure(key)
        task = asyncio.create_task(self._handshake(conn, key))
        task.add_done_callback(lambda done: self._handshake_done(done, conn))
        tasks[task] = None
        self._pending_total += 1

    def _handshake_done(self, task: asyncio.Task[None], conn: socket.socket) -> None:
        self._forget(task)
        if task in self._started:
            self._started.discard(task)  # the transport owned the socket and closed it
        else:
            _reset(conn)  # cancelled before it ran

    def _evict_one(self) -> None:
        """Cancel the oldest handshake of the source with the most open."""
        busiest = max(self._pending.values(), key=len)
        oldest = next(iter(busiest))
        self._forget(oldest)
        oldest.cancel()
        self.evicted += 1

    def _forget(self, task: asyncio.Task[None]) -> None:
        for key, tasks in self._pending.items():
            if task in tasks:
                del tasks[task]
                self._pending_total -= 1
                if not tasks:
                    del self._pending[key]
                return

    async def _handshake(self, conn: socket.socket, key: str) -> None:
        current = asyncio.current_task()
        if current is not None:
            self._started.add(current)
        try:
            async with asyncio.timeout(self._limits.handshake_timeout):
                await self._server.accept_socket(conn, ssl=self._ssl)
        except TimeoutError:
            log.debug("pod=%s: TLS handshake from %s timed out", self._label, key)
        except (OSError, ssl_module.SSLError) as exc:
            log.debug("pod=%s: TLS handshake from %s failed: %s", self._label, key, exc)

    async def _serve_plain(self, conn: socket.socket) -> None:
        try:
            await self._server.accept_socket(conn)
        except OSError as exc:
            log.debug("pod=%s: connection setup failed: %s", self._label, exc)

    def _note_pressure(self, key: str) -> None:
        """Log, at most every ``_REFUSAL_LOG_INTERVAL`` seconds, that limits are being hit."""
        now = asyncio.get_running_loop().time()
        if now - self._last_refusal_log < _REFUSAL_LOG_INTERVAL:
            return
        self._last_refusal_log = now
        log.warning("pod=%s: unauthenticated connections over the limits (%d per source, %d in "
                    "all): %d refused, %d evicted so far (latest source %s)", self._label,
                    self._limits.per_source, self._limits.total, self.refused, self.evicted, key)
