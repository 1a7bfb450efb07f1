"""A tiny sd_notify(3) client: tell systemd about readiness over ``$NOTIFY_SOCKET``.

Services of ``Type=notify`` (the forwarder's unit is one) must send ``READY=1`` once they
serve. The socket is a unix datagram socket; a name starting with ``@`` lives in the
abstract namespace. Without ``NOTIFY_SOCKET`` nothing is sent.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

from runtime.errors import PeerPodsError

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"


class NotifyError(PeerPodsError, OSError):
    """The notification could not be delivered to the socket named by ``NOTIFY_SOCKET``."""


def _address(name: str) -> str | bytes:
    if name.startswith("@"):
        return b"\0" + name[1:].encode()
    if not name.startswith("/"):
        raise NotifyError(f"sd_notify: unsupported {NOTIFY_SOCKET_ENV} address {name!r}")
    return name


def notify(state: str, *, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``"READY=1"`` or ``"STOPPING=1"``) to the service manager.

    Returns False when ``NOTIFY_SOCKET`` is unset or empty (not run by systemd), True once
    the datagram was sent. Raises :class:`NotifyError` when it cannot be delivered.
    """
    env = os.environ if environ is None else environ
    name = env.get(NOTIFY_SOCKET_ENV, "")
    if not name:
        return False
    address = _address(name)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
    except OSError as exc:
        raise NotifyError(f"sd_notify to {name!r}: {exc}") from exc
    return True
