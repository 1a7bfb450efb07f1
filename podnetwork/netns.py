"""Netlink sockets inside another network namespace, without forking.

pyroute2 opens a socket in another namespace by forking a helper process and stopping it with
SIGTERM. In a daemon whose asyncio loop handles signals, the forked child shares the loop's
signal wake-up fd, so that SIGTERM reaches the daemon's own handler and shuts it down. Here the
calling thread enters the namespace with ``setns(2)``, creates the socket and returns to its
own namespace; the socket stays bound to the namespace it was created in.
"""

from __future__ import annotations

import ctypes
import os
import socket
from typing import Any

from pyroute2 import IPRoute

from podnetwork.errors import PodNetworkError

CLONE_NEWNET = 0x40000000
NETLINK_ROUTE = 0

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def socket_in_netns(path: str, family: int, type_: int, proto: int = 0) -> socket.socket:
    """A socket created inside the network namespace at ``path`` (a file such as
    ``/run/netns/x`` or ``/proc/<pid>/ns/net``). Only the calling thread switches, briefly."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target)
            try:
                return socket.socket(family, type_, proto)
            finally:
                try:
                    _setns(own)
                except OSError as exc:  # the thread would stay in the wrong namespace
                    raise RuntimeError(f"cannot return to own network namespace: {exc}") from exc
        finally:
            os.close(target)
    finally:
        os.close(own)


class NetnsError(PodNetworkError, OSError):
    """A network namespace is missing or cannot be entered; the message names it."""


def iproute(path: str | None = None) -> Any:
    """A pyroute2 ``IPRoute`` for the namespace at ``path`` (``None``: this one).

    Never creates a namespace: a missing one is a :class:`NetnsError`.
    """
    if path is None:
        return IPRoute()
    if not os.path.exists(path):
        raise NetnsError(f"network namespace {path} does not exist")
    try:
        sock = socket_in_netns(path, socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)
    except OSError as exc:
        raise NetnsError(f"cannot open network namespace {path}: {exc}") from None
    return IPRoute(fileno=sock.detach())
