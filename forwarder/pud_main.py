"""Entry point of ``process-user-data``.

``process-user-data provision-files [-t|--user-data-fetch-timeout SECONDS]`` provisions the
pod VM's files (see :mod:`forwarder.userdata`); ``-v``/``--version`` prints the version. The
other options exist so the step can run unprivileged against test servers; each also reads
an environment variable, and a flag overrides it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from forwarder.userdata.config import ProvisionConfig

PROG = "process-user-data"
log = logging.getLogger("forwarder.pud_main")


@dataclass(frozen=True, slots=True)
class _Option:
    flags: tuple[str, ...]
    field: str
    env: str
    help: str


_DEFAULTS = ProvisionConfig()

_OPTIONS = (
    _Option(("--peerpod-dir",), "peerpod_dir", "PUD_PEERPOD_DIR",
            "directory the files are written to"),
    _Option(("--cidata-dir",), "cidata_dir", "PUD_CIDATA_DIR",
            "config drive mount point; <dir>/user-data is the first source"),
    _Option(("--dmi-dir",), "dmi_dir", "PUD_DMI_DIR",
            "sysfs DMI directory used to recognise the cloud"),
    _Option(("--aws-imds-url",), "aws_imds_url", "PUD_AWS_IMDS_URL",
            "AWS instance metadata service base URL"),
    _Option(("--azure-imds-url",), "azure_imds_url", "PUD_AZURE_IMDS_URL",
            "Azure instance metadata service base URL"),
    _Option(("--gcp-metadata-url",), "gcp_metadata_url", "PUD_GCP_METADATA_URL",
            "GCP metadata server base URL"),
    _Option(("--alibaba-metadata-url",), "alibaba_metadata_url", "PUD_ALIBABA_METADATA_URL",
            "Alibaba Cloud metadata service base URL"),
    _Option(("--retry-delay",), "retry_delay", "PUD_RETRY_DELAY",
            "seconds between user-data fetch attempts"),
    _Option(("--tpm-device",), "tpm_device", "PUD_TPM_DEVICE",
            "PCR 8 is extended only if this TPM device exists; empty disables"),
    _Option(("--pcrextend-command",), "pcrextend_command", "PUD_PCREXTEND_COMMAND",
            "command that extends a PCR (called as <cmd> 8:sha256=<hex>)"),
)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds: {text!r}")
    return value


def _version() -> str:
    try:
        version = metadata.version("peerpods")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return f"{PROG} version {version}\n  python: {platform.python_version()}\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Process user data and provision the pod VM's files."
    )
    parser.add_argument("-v", "--version", action="store_true", help="print the version")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    provision = commands.add_parser(
        "provision-files",
        help="provision required files based on user data",
        description="Fetch user-data, write the allowed files, process initdata, "
        "extend PCR 8.",
    )
    provision.add_argument(
        "-v", "--version", dest="sub_version", action="store_true", help="print the version"
    )
    provision.add_argument(
        "-t", "--user-data-fetch-timeout", type=_positive_seconds, default=None,
        metavar="SECONDS",
        help=f"timeout for fetching user data (default {_DEFAULTS.fetch_timeout:g})",
    )
    for option in _OPTIONS:
        default = getattr(_DEFAULTS, option.field)
        provision.add_argument(
            *option.flags, dest=option.field, default=None, metavar="VALUE",
            help=f"{option.help} [env {option.env}] (default {default})",
        )
    return parser


def _config(args: argparse.Namespace, env: Mapping[str, str]) -> ProvisionConfig:
    values: dict[str, Any] = {}
    for option in _OPTIONS:
        raw = getattr(args, option.field)
        origin = option.flags[0]
        if raw is None:
            raw, origin = env.get(option.env), option.env
        if raw is None:
            continue
        if option.field == "retry_delay":
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"{origin}: not a number of seconds: {raw!r}") from None
            if value < 0:
                raise ValueError(f"{origin}: must not be negative: {raw!r}")
            values[option.field] = value
        elif option.field == "tpm_device":
            values[option.field] = Path(raw) if raw else None
        elif option.field.endswith("_dir"):
            values[option.field] = Path(raw)
        else:
            values[option.field] = raw
    if args.user_data_fetch_timeout is not None:
        values["fetch_timeout"] = args.user_data_fetch_timeout
    return ProvisionConfig(**values)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version or getattr(args, "sub_version", False):
        sys.stdout.write(_version())
        return 0
    if args.command is None:
        parser.print_help()
        return 0
    try:
        config = _config(args, os.environ)
    except ValueError as exc:
        parser.error(str(exc))
    # Imported here so that --help and --version do not load the HTTP client.
    from forwarder.userdata.errors import ProvisionError
    from forwarder.userdata.provision import provision_files

    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s [userdata/provision] %(message)s",
        stream=sys.stderr,
    )
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
