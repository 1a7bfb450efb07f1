"""Command line: ``cloud-api-adaptor <provider> [flags] | version | help``.

Without a provider argument, ``CLOUD_PROVIDER`` chooses (the DaemonSet runs it that way).
``cloud-api-adaptor <provider> --help`` (or ``-help``) lists the common settings and that
provider's. Settings are parsed here, once; nothing else reads the environment.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from adaptor.config import AdaptorSettings
from providers import registry
from runtime.errors import UsageError
from runtime.settings import SettingsError, add_arguments, from_namespace

PROG = "cloud-api-adaptor"
COMMIT = "unknown"  # replaced at image build time

Loader = Callable[[str], ModuleType]


@dataclass(frozen=True)
class RunCommand:
    provider: str
    module: ModuleType
    settings: AdaptorSettings
    provider_settings: Any


@dataclass(frozen=True)
class TextCommand:
    """Print ``text`` and exit with ``status`` (version, help)."""

    text: str
    status: int = 0


def version() -> str:
    try:
        number = importlib.metadata.version("peerpods")
    except importlib.metadata.PackageNotFoundError:
        number = "unknown"
    return (
        f"{PROG} version {number}\n"
        f"  commit: {COMMIT}\n"
        f"  python: {platform.python_version()}\n"
    )


def _parser(provider: str, module: ModuleType | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} {provider}",
        allow_abbrev=False,
        description="Peer pods cloud-api-adaptor: creates pod VMs through a cloud API and "
        "proxies the Kata agent API to them.",
    )
    parser.add_argument("-help", action="help", help=argparse.SUPPRESS)
    add_arguments(parser, AdaptorSettings)
    if module is not None:
        add_arguments(parser, module.Settings)
    return parser


def general_help() -> str:
    text = _parser("<provider>", None).format_help()
    providers = ", ".join(registry.names())
    return (
        f"usage: {PROG} <provider> [flags] | version | help\n\n"
        f"providers: {providers} (default: $CLOUD_PROVIDER)\n"
        f"'{PROG} <provider> --help' lists that provider's settings too.\n\n" + text
    )


def parse_command(
    argv: Sequence[str], env: Mapping[str, str], loader: Loader = registry.load
) -> RunCommand | TextCommand:
    args = list(argv)
    if args and args[0] == "version":
        return TextCommand(version())
    if args and args[0] == "help":
        return TextCommand(general_help())
    if args and not args[0].startswith("-"):
        provider, rest = args[0], args[1:]
    else:
        provider, rest = env.get("CLOUD_PROVIDER", "").strip(), args
        if not provider:
            if any(a in ("-h", "--help", "-help") for a in rest):
                return TextCommand(general_help())
            raise UsageError("no cloud provider given and CLOUD_PROVIDER is not set")
    module = loader(provider)
    parser = _parser(provider, module)
    try:
        namespace = parser.parse_args(rest)
    except SystemExit as exit_:
        # argparse printed help (status 0) or an error (status 2) already.
        code = exit_.code if isinstance(exit_.code, int) else 2
        return TextCommand("", code)
    try:
        settings = from_namespace(AdaptorSettings, namespace, env)
        provider_settings = from_namespace(module.Settings, namespace, env)
    except SettingsError as exc:
        raise UsageError(str(exc)) from None
    return RunCommand(provider, module, settings, provider_settings)
