"""Setting values from text: booleans, durations, numbers, lists and maps (used by
:mod:`runtime.settings`).

Booleans on the command line follow Go's ``strconv.ParseBool`` (``1 t T TRUE true True`` and
``0 f F FALSE false False``). The adaptor has always accepted more, and still does, for
every program: any letter case, ``yes``/``y``/``on`` and ``no``/``n``/``off``, the empty
string (false) and surrounding blanks. Env booleans keep upstream's rule: ``1`` or ``true``
in any case is true, anything else false.

Durations follow Go's ``time.ParseDuration`` (``300ms``, ``-1.5h``, ``2h45m``, units ``ns us
µs μs ms s m h``). Kept from the adaptor, beyond Go: a bare number is seconds (``90``),
surrounding blanks are ignored, and more than one leading sign is read as the first one.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from runtime.errors import UsageError


class SettingsError(UsageError):
    """A setting has a value that cannot be parsed, or a required one is missing."""


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)([^\d.]*)")
_UNIT_NANOSECONDS = {
    "ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6, "s": 10**9,
    "m": 60 * 10**9, "h": 3600 * 10**9,
}
_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})
_MORE_TRUE = frozenset({"1", "t", "true", "yes", "y", "on"})
_MORE_FALSE = frozenset({"0", "f", "false", "no", "n", "off", ""})


def parse_duration(text: str) -> timedelta:
    """A Go duration string (``300ms``, ``1.5h``, ``2h45m``); a bare number is seconds."""
    value = text.strip()
    if not value:
        raise SettingsError("empty duration")
    try:
        if re.fullmatch(r"\d+(\.\d+)?", value):
            return timedelta(seconds=float(value))
        sign = -1 if value.startswith("-") else 1
        body = value.lstrip("+-")
        if body == "0":
            return timedelta(0)
        if not body:
            raise SettingsError(f"invalid duration {text!r}")
        pos, nanoseconds = 0, Decimal(0)
        while pos < len(body):
            match = _DURATION_PART.match(body, pos)
            if match is None:
                raise SettingsError(f"invalid duration {text!r}")
            number, unit = match.groups()
            if not unit:
                raise SettingsError(f"invalid duration {text!r}: missing unit")
            if unit not in _UNIT_NANOSECONDS:
                raise SettingsError(f"invalid duration {text!r}: unknown unit {unit!r}")
            nanoseconds += Decimal(number) * _UNIT_NANOSECONDS[unit]
            pos = match.end()
        return timedelta(microseconds=sign * int(nanoseconds) / 1000)
    except OverflowError:
        raise SettingsError(f"invalid duration {text!r}: out of range") from None


def format_duration(value: timedelta) -> str:
    seconds = value.total_seconds()
    if seconds and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


def parse_bool(text: str) -> bool:
    """Upstream's rule for env booleans: ``1`` or ``true`` (any case) is true."""
    return text.strip().lower() in ("1", "true")


def parse_flag_bool(text: str) -> bool:
    """A flag's boolean: Go's ``strconv.ParseBool`` plus the forms in the module docstring."""
    if text in _GO_TRUE:
        return True
    if text in _GO_FALSE:
        return False
    lowered = text.strip().lower()
    if lowered in _MORE_TRUE:
        return True
    if lowered in _MORE_FALSE:
        return False
    raise SettingsError(f"invalid boolean value {text!r}")


def parse_key_values(text: str) -> dict[str, str]:
    """``k=v,k2=v2`` (upstream's ``TAGS`` format)."""
    result: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SettingsError(f"invalid key=value pair {item!r}")
        result[key.strip()] = value.strip()
    return result


def base_type(annotation: Any) -> Any:
    """``str | None`` -> ``str``; other annotations unchanged."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _number(kind: type, raw: str, what: str) -> Any:
    try:
        return kind(raw.strip())
    except ValueError:
        raise SettingsError(f"invalid {what} {raw!r}") from None


def convert(annotation: Any, raw: str, *, from_env: bool) -> Any:
    """Turn a raw string into the field's type."""
    kind = base_type(annotation)
    origin = typing.get_origin(kind)
    if kind is bool:
        return parse_bool(raw) if from_env else parse_flag_bool(raw)
    if kind is int:
        return _number(int, raw, "integer")
    if kind is float:
        return _number(float, raw, "number")
    if kind is timedelta:
        return parse_duration(raw)
    if kind is Path:
        return Path(raw)
    if origin is tuple:
        return tuple(item.strip() for item in raw.split(",") if item.strip())
    if origin in (dict, Mapping) or kind is dict:
        return parse_key_values(raw)
    return raw
