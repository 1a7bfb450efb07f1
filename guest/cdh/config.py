"""``cdh.toml`` as upstream reads it; unknown keys (``[image]`` ...) are ignored.

Without ``-c``, the KBC name and URL come from ``AA_KBC_PARAMS`` or the kernel command
line's ``agent.aa_kbc_params``, else ``offline_fs_kbc`` with no URL, as upstream does.
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guest.aa.config import kbc_params
from guest.addr import AA_SOCKET, CDH_SOCKET
from guest.errors import GuestConfigError

log = logging.getLogger(__name__)

CC_KBC = "cc_kbc"
OFFLINE_FS_KBC = "offline_fs_kbc"
KBC_NAMES = (CC_KBC, OFFLINE_FS_KBC)


@dataclass(frozen=True, slots=True)
class KbcConfig:
    name: str
    url: str = ""
    kbs_cert: str | None = None


@dataclass(frozen=True, slots=True)
class Credential:
    resource_uri: str
    path: str


@dataclass(frozen=True, slots=True)
class CdhConfig:
    kbc: KbcConfig
    socket: str = CDH_SOCKET
    aa_socket: str = AA_SOCKET
    credentials: tuple[Credential, ...] = ()
    skip_sealed_secret_verification: bool = False
    log_level: str = "info"


def _table(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise GuestConfigError(f"cdh.toml: [{key}] must be a table")
    return value


def _str(data: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise GuestConfigError(f"cdh.toml: {key} must be a string")
    return value


def _kbc(table: Mapping[str, Any]) -> KbcConfig:
    if "name" not in table:
        raise GuestConfigError("cdh.toml: [kbc] name is required")
    name = _str(table, "name")
    if name not in KBC_NAMES:
        raise GuestConfigError(f"cdh.toml: unsupported kbc {name!r} (cc_kbc, offline_fs_kbc)")
    cert = table.get("kbs_cert")
    if cert is not None and not isinstance(cert, str):
        raise GuestConfigError("cdh.toml: kbc.kbs_cert must be a string")
    return KbcConfig(name, _str(table, "url", ""), cert)


def parse(text: str) -> CdhConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise GuestConfigError(f"cdh.toml is not valid TOML: {exc}") from exc
    credentials = data.get("credentials", [])
    if not isinstance(credentials, list):
        raise GuestConfigError("cdh.toml: [[credentials]] must be an array of tables")
    skip = data.get("skip_sealed_secret_verification", False)
    if not isinstance(skip, bool):
        raise GuestConfigError("cdh.toml: skip_sealed_secret_verification must be a boolean")
    return CdhConfig(
        kbc=_kbc(_table(data, "kbc")),
        socket=_str(data, "socket", CDH_SOCKET),
        aa_socket=_str(_table(data, "aa"), "aa_socket", AA_SOCKET),
        credentials=tuple(
            Credential(_str(c, "resource_uri"), _str(c, "path"))
            for c in credentials
            if isinstance(c, Mapping)
        ),
        skip_sealed_secret_verification=skip,
        log_level=str(_table(data, "log").get("level", "info")),
    )


def load(path: Path) -> CdhConfig:
    try:
        return parse(path.read_text())
    except OSError as exc:
        raise GuestConfigError(f"cannot read CDH config {path}: {exc}") from exc


def from_kernel_cmdline(env: Mapping[str, str], cmdline: str) -> CdhConfig:
    params = kbc_params(env, cmdline)
    if params is None:
        # upstream's AaKbcParams::new(): without either, offline_fs_kbc with no URL, so the
        # CDH of a pod VM whose initdata carries no cdh.toml (the dummy) still starts
        log.debug(
            "failed to get aa_kbc_params in either both env or kernel cmdline, "
            "use `offline_fs_kbc::null` as default."
        )
        params = (OFFLINE_FS_KBC, "")
    name, url = params
    if name not in KBC_NAMES:
        raise GuestConfigError(f"unsupported kbc {name!r} in aa_kbc_params")
    return CdhConfig(kbc=KbcConfig(name, url))
