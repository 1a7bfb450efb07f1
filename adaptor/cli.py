"""Command line: ``cloud-api-adaptor <provider> [flags] | version | help``.

Without a provider argument, ``CLOUD_PROVIDER`` chooses (the DaemonSet runs it that way).
``cloud-api-adaptor <provider> --help`` (or ``-help``) lists the common settings and that
provider's. Settings are parsed here, once; nothing else reads the environment.
"""

from __future__ import annotations

import importlib.metadata
import platform
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from adaptor.config import AdaptorSettings
from providers import registry
from runtime.errors import UsageError
from runtime.settings import Flag, SettingsError, build, flags_of, scan, usage

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


DESCRIPTION = ("Peer pods cloud-api-adaptor: creates pod VMs through a cloud API and proxies "
               "the Kata agent API to them.")


def _flags(module: ModuleType | None) -> list[Flag]:
    flags = flags_of(AdaptorSettings)
    if module is not None:
        flags += flags_of(module.Settings)
    return flags


def provider_help(provider: str, module: ModuleType | None) -> str:
    """``cloud-api-adaptor <provider> -help``: the common settings, then the provider's."""
    text = f"usage: {PROG} {provider} [flags]\n\n{DESCRIPTION}\n\n"
    text += usage(flags_of(AdaptorSettings), AdaptorSettings.TITLE)
    if module is not None:
        title = getattr(module.Settings, "TITLE", f"{provider} settings")
        text += "\n" + usage(flags_of(module.Settings), title)
    return text


def general_help() -> str:
    providers = ", ".join(registry.names())
    return (
        f"usage: {PROG} <provider> [flags] | version | help\n\n"
        f"providers: {providers} (default: $CLOUD_PROVIDER)\n"
        f"'{PROG} <provider> --help' lists that provider's settings too.\n\n"
        + provider_help("<provider>", None)
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
            if any(a in ("-h", "--help", "-help", "--h") for a in rest):
                return TextCommand(general_help())
            raise UsageError("no cloud provider given and CLOUD_PROVIDER is not set")
    module = loader(provider)
    try:
        parsed = scan(rest, _flags(module))
        if parsed.help:
            return TextCommand(provider_help(provider, module))
        settings = build(AdaptorSettings, parsed, env)
        provider_settings = build(module.Settings, parsed, env)
    except SettingsError as exc:
        raise UsageError(str(exc)) from None
    return RunCommand(provider, module, settings, provider_settings)
