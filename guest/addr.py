"""``unix://`` socket addresses as guest-components spells them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from guest.errors import GuestConfigError

UNIX_PREFIX = "unix://"
AA_SOCKET = "unix:///run/confidential-containers/attestation-agent/attestation-agent.sock"
CDH_SOCKET = "unix:///run/confidential-containers/cdh.sock"


def unix_path(address: str) -> Path:
    """The filesystem path of ``unix:///path``; anything else is refused."""
    if not address.startswith(UNIX_PREFIX) or len(address) == len(UNIX_PREFIX):
        raise GuestConfigError(f"only unix:// socket addresses are supported, got {address!r}")
    return Path(address[len(UNIX_PREFIX) :])


def prepare_listen_path(path: Path) -> None:
    """Create the socket's directory and remove a stale socket left by a previous run.

    Anything at ``path`` that is not a socket is left alone (binding then fails clearly).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISSOCK(mode):
        path.unlink()
