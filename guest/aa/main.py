"""``attestation-agent``: guest-components' ttrpc attestation agent, flags as upstream.

    attestation-agent [-a unix:///...sock] [-c aa.toml] [-i <b64 digest> | -t initdata.toml]

``--tee`` (not upstream) forces one attester instead of detecting it.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import logging
import os
import sys
from pathlib import Path

from guest.aa import config as aa_config
from guest.aa.agent import AttestationAgent
from guest.aa.service import AttestationAgentService
from guest.addr import AA_SOCKET, unix_path
from guest.attesters.base import InitDataResult
from guest.attesters.detect import AUTO, CHOICES, make_attester, platform_from_env
from guest.daemon import configure_logging, run_main, serve_unix
from guest.errors import GuestError
from protocols import initdata
from protocols.ttrpc import Server

log = logging.getLogger("attestation-agent")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="attestation-agent", description=__doc__.splitlines()[0])
    p.add_argument(
        "-a",
        "--attestation_sock",
        default=AA_SOCKET,
        help="ttrpc unix socket address (unix:// only)",
    )
    p.add_argument("-c", "--config-file", help="AA configuration file (aa.toml)")
    p.add_argument("-i", "--initdata-digest", help="initdata digest to check (standard base64)")
    p.add_argument("-t", "--initdata-toml", help="initdata TOML file to check (wins over -i)")
    p.add_argument("--tee", choices=CHOICES, default=AUTO, help="force one attester")
    return p


def load_config(path: str | None) -> aa_config.AaConfig:
    if path is not None:
        return aa_config.load(Path(path))
    log.info(
        "No AA config file specified. Using default configuration and the kbs address "
        "will be read from kernel cmdline."
    )
    return aa_config.from_kernel_cmdline(os.environ, aa_config.read_cmdline())


def initdata_input(args: argparse.Namespace) -> tuple[str | None, bytes | None]:
    """(initdata TOML text, digest to bind) from -t or -i."""
    if args.initdata_toml:
        log.info("Initdata TOML file is given by parameter")
        raw = Path(args.initdata_toml).read_bytes()
        parsed = initdata.parse(raw)
        return raw.decode(), bytes.fromhex(initdata.digest(parsed))
    if args.initdata_digest:
        log.info("Initdata digest is given by parameter")
        try:
            return None, base64.b64decode(args.initdata_digest, validate=True)
        except binascii.Error as exc:
            raise GuestError("base64 decode initdata") from exc
    return None, None


async def run(args: argparse.Namespace) -> None:
    config = load_config(args.config_file)
    configure_logging(config.log_level)
    socket_path = unix_path(args.attestation_sock)
    toml_text, digest = initdata_input(args)
    agent = AttestationAgent(
        config, make_attester(args.tee, platform_from_env(os.environ)), initdata_toml=toml_text
    )
    if digest is not None:
        result = await agent.bind_init_data(digest)
        if result is InitDataResult.OK:
            log.info("Check initdata passed.")
        else:
            log.info("Platform does not support initdata checking. Jumping.")
    await agent.init()
    server = Server()
    AttestationAgentService(agent).register(server)
    log.info("tee=%s: attestation-agent listening on %s", agent.tee, args.attestation_sock)
    try:
        await serve_unix(server, socket_path)
    finally:
        await agent.aclose()


def main(argv: list[str] | None = None) -> int:
    return run_main("attestation-agent", run(parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
