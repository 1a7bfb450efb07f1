"""One libvirt connection, opened on first use and reopened when it drops.

Every libvirt call runs in a worker thread (``asyncio.to_thread``); libvirt connections are
thread-safe, so calls are not serialized beyond the lock that guards (re)opening.
``libvirtError`` never leaves this package: :func:`translate` maps it to the provider errors.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar

import libvirt

from providers.base import (
    InstanceNotFound,
    InvalidSpec,
    ProviderError,
    ProviderUnavailable,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

Opener = Callable[[str], libvirt.virConnect]


def _silence(_ctx: object, _error: object) -> None:
    """libvirt prints every error to stderr unless a handler is set; we raise them instead."""


libvirt.registerErrorHandler(_silence, None)


def _codes(*names: str) -> frozenset[int]:
    return frozenset(getattr(libvirt, name) for name in names if hasattr(libvirt, name))


UNAVAILABLE_CODES = _codes(
    "VIR_ERR_NO_CONNECT",
    "VIR_ERR_SYSTEM_ERROR",
    "VIR_ERR_RPC",
    "VIR_ERR_OPERATION_TIMEOUT",
    "VIR_ERR_AUTH_FAILED",
    "VIR_ERR_AUTH_CANCELLED",
    "VIR_ERR_AUTH_UNAVAILABLE",
    "VIR_ERR_AGENT_UNRESPONSIVE",
)
NOT_SUPPORTED_CODES = _codes("VIR_ERR_NO_SUPPORT", "VIR_ERR_INVALID_ARG")


def error_code(exc: libvirt.libvirtError) -> int:
    code = exc.get_error_code()
    return int(code) if code is not None else -1


def is_missing(exc: libvirt.libvirtError, what: str) -> bool:
    """Whether ``exc`` says the domain / storage_vol / storage_pool / network is missing."""
    return error_code(exc) == getattr(libvirt, f"VIR_ERR_NO_{what.upper()}", None)


def translate(exc: libvirt.libvirtError, context: str, instance_id: str = "") -> ProviderError:
    """The provider error for a libvirt error raised while doing ``context``."""
    message = f"{context}: {exc.get_error_message() or exc}"
    code = error_code(exc)
    if code == libvirt.VIR_ERR_NO_DOMAIN and instance_id:
        error: ProviderError = InstanceNotFound(instance_id)
    elif code in UNAVAILABLE_CODES:
        error = ProviderUnavailable(message)
    elif code in (
        libvirt.VIR_ERR_NO_STORAGE_VOL,
        libvirt.VIR_ERR_NO_STORAGE_POOL,
        libvirt.VIR_ERR_NO_NETWORK,
        libvirt.VIR_ERR_XML_ERROR,
        libvirt.VIR_ERR_CONFIG_UNSUPPORTED,
    ):
        error = InvalidSpec(message)
    else:
        error = ProviderError(message)
    return error


class Connection:
    """The provider's libvirt connection. ``run(fn)`` calls ``fn(conn)`` in a thread."""

    def __init__(self, uri: str, opener: Opener | None = None) -> None:
        self.uri = uri
        self._opener: Opener = opener or libvirt.open
        self._conn: libvirt.virConnect | None = None
        self._lock = asyncio.Lock()
        self.opened = 0  # how many times a connection was opened (reconnects show here)

    async def _get(self) -> libvirt.virConnect:
        async with self._lock:
            if self._conn is None:
                try:
                    self._conn = await asyncio.to_thread(self._opener, self.uri)
                except libvirt.libvirtError as exc:
                    raise ProviderUnavailable(
                        f"cannot connect to libvirt at {self.uri}: "
                        f"{exc.get_error_message() or exc}"
                    ) from exc
                self.opened += 1
                log.info("libvirt connection to %s opened", self.uri)
            return self._conn

    async def _drop(self, conn: libvirt.virConnect) -> None:
        async with self._lock:
            if self._conn is conn:
                self._conn = None
        await asyncio.to_thread(_close_quietly, conn)

    async def run(self, fn: Callable[[libvirt.virConnect], T]) -> T:
        """Run ``fn(conn)`` in a thread; if the connection turns out dead, reopen and retry once.

        ``libvirtError`` from ``fn`` propagates (callers translate it with context).
        """
        conn = await self._get()
        try:
            return await asyncio.to_thread(fn, conn)
        except libvirt.libvirtError:
            if await asyncio.to_thread(_alive, conn):
                raise
            log.warning("libvirt connection to %s dropped; reconnecting", self.uri)
            await self._drop(conn)
        conn = await self._get()
        return await asyncio.to_thread(fn, conn)

    async def aclose(self) -> None:
        async with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.to_thread(_close_quietly, conn)


def _alive(conn: libvirt.virConnect) -> bool:
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False


def _close_quietly(conn: libvirt.virConnect) -> None:
    try:
        conn.close()
    except libvirt.libvirtError as exc:
        log.debug("closing libvirt connection: %s", exc)
