"""``api-server-rest``: flags as upstream (-b, -f, -c, -a); default bind 127.0.0.1:8006."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from aiohttp import web

from guest.addr import AA_SOCKET, CDH_SOCKET, unix_path
from guest.api_server.backends import AaBackend, CdhBackend
from guest.api_server.router import Router
from guest.daemon import configure_logging, wait_for_signal
from runtime.errors import PeerPodsError

log = logging.getLogger("api-server-rest")

DEFAULT_BIND = "127.0.0.1:8006"
FEATURES = ("resource", "attestation", "all")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="api-server-rest", description=__doc__.splitlines()[0])
    p.add_argument("-b", "--bind", default=DEFAULT_BIND, help="bind address host:port")
    p.add_argument("-f", "--features", default="resource", help="resource, attestation or all")
    p.add_argument("-c", "--cdh_addr", default=CDH_SOCKET, help="CDH ttrpc address")
    p.add_argument("-a", "--aa_addr", default=AA_SOCKET, help="AA ttrpc address")
    return p


def split_bind(bind: str) -> tuple[str, int]:
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit():
        raise PeerPodsError(f"Failed to parse the address {bind!r}")
    return host.strip("[]"), int(port)


async def run(args: argparse.Namespace) -> None:
    host, port = split_bind(args.bind)
    aa = AaBackend(unix_path(args.aa_addr)) if args.features in ("attestation", "all") else None
    cdh = CdhBackend(unix_path(args.cdh_addr)) if args.features in ("resource", "all") else None
    runner = web.AppRunner(Router(aa, cdh, args.features).app(), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        log.info("API Server listening on http://%s", args.bind)
        await wait_for_signal()
    finally:
        await runner.cleanup()
        for backend in (aa, cdh):
            if backend is not None:
                await backend.aclose()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure_logging("info")
    if args.features not in FEATURES:
        log.error("Unknown features. Supported features are: resource, attestation, all.")
        return 1
    log.info("Starting API server on %s with features %s", args.bind, args.features)
    try:
        asyncio.run(run(args))
    except (PeerPodsError, OSError) as exc:
        log.error("api-server-rest: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
