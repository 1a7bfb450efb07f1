"""Entry point of ``agent-protocol-forwarder`` (runs in the pod VM as a systemd service).

Exit status: 0 after a clean shutdown (SIGTERM/SIGINT) or ``-version``/``-help``, 1 when it
cannot start, 1 at once on a second signal.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import signal
import sys
from collections.abc import Sequence
from importlib import metadata

from forwarder.apf.daemon import Forwarder, StartupError, load_config
from forwarder.apf.options import PROGRAM_NAME, Options, UsageError, parse_options, usage
from runtime import aio
from runtime.logsafe import escape_root_handlers

log = logging.getLogger("forwarder")


def _version() -> str:
    try:
        return metadata.version("peerpods")
    except metadata.PackageNotFoundError:
        return "unknown"


def version_text() -> str:
    return (f"{PROGRAM_NAME} version {_version()}\n  commit: unknown\n"
            f"  python: {platform.python_version()}\n")


def _configure_logging() -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s [%(name)s] %(levelname)s %(message)s",
        datefmt="%Y/%m/%d %H:%M:%S",
    )
    escape_root_handlers()


async def serve(options: Options) -> None:
    """Run until SIGTERM or SIGINT; a second signal exits at once with status 1."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            log.warning("signal %s received again, force exiting", name)
            logging.shutdown()
            os._exit(1)
        log.info("signal %s received, shutting down", name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        config = load_config(options.config_path)
        forwarder = Forwarder(options, config)
        starting = asyncio.create_task(forwarder.start())
        stopping = asyncio.create_task(stop.wait())
        try:
            # A signal during startup (the pod network may wait minutes for the VM's
            # interface) stops it too.
            await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if starting.done():
                starting.result()  # StartupError propagates
                await stopping
        finally:
            for task in (starting, stopping):
                task.cancel()
            await asyncio.gather(starting, stopping, return_exceptions=True)
            await forwarder.aclose()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    prog = os.path.basename(sys.argv[0]) if argv is None else PROGRAM_NAME
    try:
        options, wants_help = parse_options(args, os.environ)
    except UsageError as exc:
        sys.stderr.write(f"{exc}\n{usage()}")
        return 1
    if wants_help:
        sys.stderr.write(usage())
        return 0
    if options.show_version:
        sys.stdout.write(version_text())
        return 0

    _configure_logging()
    log.info("%s version %s starting", PROGRAM_NAME, _version())
    try:
        aio.run(serve(options))
    except StartupError as exc:
        sys.stderr.write(f"{prog}: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
