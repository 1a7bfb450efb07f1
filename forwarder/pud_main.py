"""Entry point of ``process-user-data``.

``process-user-data provision-files [-t|--user-data-fetch-timeout SECONDS]`` provisions the
pod VM's files (see :mod:`forwarder.userdata`); ``-v``/``--version`` prints the version. The
other options exist so the step can run unprivileged against test servers; each also reads
an environment variable, and a flag overrides it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import ClassVar

from forwarder.userdata.config import ProvisionConfig
from runtime.logsafe import escape_root_handlers
from runtime.settings import SettingsError, build, flags_of, scan, setting, usage

PROG = "process-user-data"
log = logging.getLogger("forwarder.pud_main")


@dataclass(frozen=True)
class VersionFlag:
    TITLE: ClassVar[str] = "flags"

    version: bool = setting(flag="--version", aliases=("-v",), default=False,
                            help="print the version")


@dataclass(frozen=True, slots=True)
class TextCommand:
    """Print ``text`` and exit 0 (version, help)."""

    text: str


def _version() -> str:
    try:
        version = metadata.version("peerpods")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return f"{PROG} version {version}\n  python: {platform.python_version()}\n"


def general_help() -> str:
    return (f"usage: {PROG} [-v|--version] COMMAND [flags]\n\n"
            "Process user data and provision the pod VM's files.\n\n"
            "commands:\n"
            "  provision-files    provision required files based on user data\n\n"
            + usage(flags_of(VersionFlag), VersionFlag.TITLE))


def provision_help() -> str:
    return (f"usage: {PROG} provision-files [flags]\n\n"
            "Fetch user-data, write the allowed files, process initdata, extend PCR 8.\n\n"
            + usage(flags_of(VersionFlag) + flags_of(ProvisionConfig), ProvisionConfig.TITLE))


def parse_command(argv: Sequence[str], env: Mapping[str, str]) -> ProvisionConfig | TextCommand:
    """``[-v] provision-files [flags]`` -> the settings, or a text to print. Raises
    :class:`SettingsError` on a usage error."""
    top = scan(argv, flags_of(VersionFlag), stop_at_argument=True)
    if top.help:
        return TextCommand(general_help())
    if build(VersionFlag, top, env).version:
        return TextCommand(_version())
    if not top.args:
        return TextCommand(general_help())
    command, rest = top.args[0], top.args[1:]
    if command != "provision-files":
        raise SettingsError(f"unknown command {command!r} (choose from 'provision-files')")
    parsed = scan(rest, flags_of(VersionFlag) + flags_of(ProvisionConfig))
    if parsed.help:
        return TextCommand(provision_help())
    if build(VersionFlag, parsed, env).version:
        return TextCommand(_version())
    return build(ProvisionConfig, parsed, env)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        command = parse_command(sys.argv[1:] if argv is None else argv, os.environ)
    except SettingsError as exc:
        sys.stderr.write(f"{PROG}: {exc}\nRun '{PROG} --help' for usage.\n")
        return 2
    if isinstance(command, TextCommand):
        sys.stdout.write(command.text)
        return 0
    config = command
    # Imported here so that --help and --version do not load the HTTP client.
    from forwarder.userdata.errors import ProvisionError
    from forwarder.userdata.provision import provision_files

    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s [userdata/provision] %(message)s",
        stream=sys.stderr,
    )
    escape_root_handlers()
    try:
        result = asyncio.run(provision_files(config))
    except ProvisionError as exc:
        log.error("provision-files failed: %s", exc)
        return 1
    log.info(
        "provision-files done: source=%s written=%d refused=%d pcr8_extended=%s",
        result.source or "none", len(result.written), len(result.refused),
        result.pcr8_extended,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
