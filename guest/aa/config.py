"""``aa.toml`` as upstream reads it; unknown keys are ignored.

Without ``-c`` the KBS URL comes from ``AA_KBC_PARAMS`` or the kernel command line's
``agent.aa_kbc_params`` (``cc_kbc::<url>``), as upstream does.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guest.errors import GuestConfigError
from guest.kbs.keys import DEFAULT_ALGORITHM, P256, P521, RSA_OAEP_256

DEFAULT_INIT_PCR = 17
CMDLINE = Path("/proc/cmdline")
AA_KBC_PARAMS_ENV = "AA_KBC_PARAMS"
CMDLINE_KEY = "agent.aa_kbc_params"


@dataclass(frozen=True, slots=True)
class KbsTokenConfig:
    url: str
    cert: str | None = None
    tee_key_algorithm: str = DEFAULT_ALGORITHM


@dataclass(frozen=True, slots=True)
class CocoAsConfig:
    url: str


@dataclass(frozen=True, slots=True)
class EventlogConfig:
    init_pcr: int = DEFAULT_INIT_PCR
    enable_eventlog: bool = False


@dataclass(frozen=True, slots=True)
class AaConfig:
    kbs: KbsTokenConfig | None = None
    coco_as: CocoAsConfig | None = None
    eventlog: EventlogConfig = field(default_factory=EventlogConfig)
    log_level: str = "info"


def _table(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise GuestConfigError(f"aa.toml: [{key}] must be a table")
    return value


def _string(data: Mapping[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise GuestConfigError(f"aa.toml: {where}.{key} must be a string")
    return value


def parse(text: str) -> AaConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise GuestConfigError(f"aa.toml is not valid TOML: {exc}") from exc
    tokens = _table(data, "token_configs")
    kbs = coco_as = None
    if "kbs" in tokens:
        table = _table(tokens, "kbs")
        algorithm = table.get("tee_key_algorithm", DEFAULT_ALGORITHM)
        if algorithm not in (P256, P521, RSA_OAEP_256):
            raise GuestConfigError(f"aa.toml: unknown tee_key_algorithm {algorithm!r}")
        cert = table.get("cert")
        if cert is not None and not isinstance(cert, str):
            raise GuestConfigError("aa.toml: token_configs.kbs.cert must be a string")
        kbs = KbsTokenConfig(_string(table, "url", "token_configs.kbs"), cert, algorithm)
    if "coco_as" in tokens:
        coco_as = CocoAsConfig(_string(_table(tokens, "coco_as"), "url", "token_configs.coco_as"))
    events = _table(data, "eventlog_config")
    eventlog = EventlogConfig(
        int(events.get("init_pcr", DEFAULT_INIT_PCR)), bool(events.get("enable_eventlog", False))
    )
    level = _table(data, "log").get("level", "info")
    return AaConfig(kbs, coco_as, eventlog, str(level))


def load(path: Path) -> AaConfig:
    try:
        return parse(path.read_text())
    except OSError as exc:
        raise GuestConfigError(f"cannot read AA config {path}: {exc}") from exc


def kbc_params(env: Mapping[str, str], cmdline: str) -> tuple[str, str] | None:
    """``(kbc name, url)`` from ``AA_KBC_PARAMS`` or ``agent.aa_kbc_params=``."""
    raw = env.get(AA_KBC_PARAMS_ENV)
    if raw is None:
        for word in cmdline.split():
            if word.startswith(CMDLINE_KEY + "="):
                raw = word[len(CMDLINE_KEY) + 1 :]
    if not raw:
        return None
    name, sep, url = raw.partition("::")
    if not sep or not name:
        raise GuestConfigError(f"aa_kbc_params {raw!r} is not <kbc>::<url>")
    return name, url


def read_cmdline(path: Path = CMDLINE) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def from_kernel_cmdline(env: Mapping[str, str], cmdline: str) -> AaConfig:
    params = kbc_params(env, cmdline)
    return AaConfig(kbs=KbsTokenConfig(params[1]) if params else None)
