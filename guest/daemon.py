"""What the three daemons share: logging setup, serving until a signal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from guest.addr import prepare_listen_path
from protocols.ttrpc import Server
from runtime.errors import PeerPodsError

LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure_logging(level: str) -> None:
    """RUST_LOG, when set to a plain level, wins over the config file (as upstream)."""
    name = os.environ.get("RUST_LOG", level).strip().lower()
    logging.basicConfig(
        level=LEVELS.get(name, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


async def wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)


async def serve_unix(server: Server, path: Path) -> None:
    """Listen on ``path`` (stale socket removed) until SIGINT/SIGTERM/SIGHUP."""
    prepare_listen_path(path)
    await server.start_unix(str(path))
    try:
        await wait_for_signal()
    finally:
        await server.shutdown()
        _remove_socket(path)


def _remove_socket(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def run_main(name: str, main: Coroutine[Any, Any, None]) -> int:
    """Run a daemon's ``main``: exit status 0, or 1 after logging ``<name>: <error>`` for a
    PeerPodsError or OSError (handlers are set up if the daemon had not got that far)."""
    try:
        asyncio.run(main)
    except (PeerPodsError, OSError) as exc:
        logging.basicConfig()
        logging.getLogger(name).error("%s: %s", name, exc)
        return 1
    return 0
