"""Entry point of ``peerpods-webhook``: parse settings, serve until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence

from runtime import aio
from runtime.errors import StartupError
from runtime.logsafe import escape_root_handlers
from runtime.settings import SettingsError, describe, flags_of, parse_settings, usage
from runtime.tlsprofile import TLSProfile, TLSProfileError, parse_profile
from webhook.config import PROGRAM_NAME, WebhookSettings
from webhook.server import WebhookServer

log = logging.getLogger("webhook")


async def serve(settings: WebhookSettings, profile: TLSProfile) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with WebhookServer(settings, profile):
            await stop.wait()
            log.info("stopping")
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def load(argv: Sequence[str], env: Mapping[str, str]) -> tuple[WebhookSettings, TLSProfile]:
    """Settings and TLS profile; a :class:`~runtime.errors.UsageError` when invalid."""
    settings = parse_settings(WebhookSettings, argv, env)
    profile = parse_profile(settings.tls_min_version, settings.tls_cipher_suites)
    return settings, profile


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if any(a.lstrip("-") in ("h", "help") for a in args):
        sys.stderr.write(usage(flags_of(WebhookSettings), f"Usage of {PROGRAM_NAME}"))
        return 0
    try:
        settings, profile = load(args, os.environ)
    except SettingsError as exc:
        sys.stderr.write(f"{exc}\n{usage(flags_of(WebhookSettings))}")
        return 2
    except TLSProfileError as exc:
        sys.stderr.write(f"{PROGRAM_NAME}: invalid TLS configuration: {exc}\n")
        return 1
    logging.basicConfig(
        stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=getattr(logging, settings.log_level.upper()))
    escape_root_handlers()  # pod names and quantities come from unvalidated pods
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
    log.info("%s starting: %s", PROGRAM_NAME, describe(settings))
    try:
        aio.run(serve(settings, profile))
    except (StartupError, TLSProfileError, OSError) as exc:
        log.error("startup failed: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
