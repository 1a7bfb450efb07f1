"""``confidential-data-hub``: guest-components' ttrpc CDH. Its only flag is ``-c``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from guest.aa.config import read_cmdline
from guest.addr import unix_path
from guest.cdh import config as cdh_config
from guest.cdh.hub import Hub, make_kbc
from guest.cdh.service import CdhServices
from guest.daemon import configure_logging, run_main, serve_unix
from protocols.ttrpc import Server

log = logging.getLogger("confidential-data-hub")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="confidential-data-hub", description=__doc__.splitlines()[0])
    p.add_argument("-c", "--config", help="path to cdh.toml")
    return p


async def run(args: argparse.Namespace) -> None:
    if args.config:
        config = cdh_config.load(Path(args.config))
    else:
        config = cdh_config.from_kernel_cmdline(os.environ, read_cmdline())
    configure_logging(config.log_level)
    socket_path = unix_path(config.socket)
    hub = Hub(config, make_kbc(config, dict(os.environ)))
    try:
        await hub.init_credentials()
        server = Server()
        CdhServices(hub).register(server)
        log.info("kbc=%s: confidential-data-hub listening on %s", config.kbc.name, config.socket)
        await serve_unix(server, socket_path)
    finally:
        await hub.aclose()


def main(argv: list[str] | None = None) -> int:
    return run_main("confidential-data-hub", run(parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
