"""Setting values from text: booleans, durations, numbers, lists and maps (used by
:mod:`runtime.settings`).

Booleans on the command line follow Go's ``strconv.ParseBool`` (``1 t T TRUE true True`` and
``0 f F FALSE false False``). The adaptor has always accepted more, and still does, for
every program: any letter case, ``yes``/``y``/``on`` and ``no``/``n``/``off``, the empty
string (false) and surrounding blanks. Env booleans keep upstream's rule: ``1`` or ``true``
in any case is true, anything else false.

Durations are parsed exactly as Go's ``time.ParseDuration`` (``300ms``, ``-1.5h``, ``2h45m``,
units ``ns us µs μs ms s m h``): a unit is required except for ``0``, blanks are not allowed,
and the value must fit Go's int64 nanoseconds. A flag that does not parse is an error. An env
duration that does not parse is ignored with a warning and the default kept, as upstream's
``DurationWithEnv`` does (:class:`IgnoredEnvValue`, handled by :mod:`runtime.settings`).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from runtime.errors import UsageError


class SettingsError(UsageError):
    """A setting has a value that cannot be parsed, or a required one is missing."""


_UNIT_NANOSECONDS = {
    "ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6, "s": 10**9,
    "m": 60 * 10**9, "h": 3600 * 10**9,
}
_MAX = 1 << 63
_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})
_MORE_TRUE = frozenset({"1", "t", "true", "yes", "y", "on"})
_MORE_FALSE = frozenset({"0", "f", "false", "no", "n", "off", ""})


class IgnoredEnvValue(SettingsError):
    """An env value upstream would ignore (keeping the default) rather than refuse."""


def _leading_int(s: str) -> tuple[int, str]:
    """Go's ``leadingInt``: the leading digits; ``OverflowError`` past 1<<63."""
    i, x = 0, 0
    while i < len(s) and "0" <= s[i] <= "9":
        if x > _MAX // 10:
            raise OverflowError
        x = x * 10 + ord(s[i]) - ord("0")
        if x > _MAX:
            raise OverflowError
        i += 1
    return x, s[i:]


def _leading_fraction(s: str) -> tuple[int, float, str]:
    """Go's ``leadingFraction``: digits after the point; stops gaining precision on overflow."""
    i, x, scale, overflow = 0, 0, 1.0, False
    while i < len(s) and "0" <= s[i] <= "9":
        if not overflow:
            y = x * 10 + ord(s[i]) - ord("0")
            if x > (_MAX - 1) // 10 or y > _MAX:
                overflow = True
            else:
                x, scale = y, scale * 10
        i += 1
    return x, scale, s[i:]


def go_duration_ns(text: str) -> int:
    """Go's ``time.ParseDuration`` in nanoseconds, step for step (``src/time/format.go``)."""
    invalid = SettingsError(f"time: invalid duration {_go_quote(text)}")
    s, neg, total = text, False, 0
    if s and s[0] in "+-":
        neg, s = s[0] == "-", s[1:]
    if s == "0":
        return 0
    if not s:
        raise invalid
    while s:
        if not (s[0] == "." or "0" <= s[0] <= "9"):
            raise invalid
        before = len(s)
        try:
            v, s = _leading_int(s)
        except OverflowError:
            raise invalid from None
        pre, post, f, scale = before != len(s), False, 0, 1.0
        if s and s[0] == ".":
            s = s[1:]
            before = len(s)
            f, scale, s = _leading_fraction(s)
            post = before != len(s)
        if not pre and not post:
            raise invalid
        i = 0
        while i < len(s) and not (s[i] == "." or "0" <= s[i] <= "9"):
            i += 1
        if i == 0:
            raise SettingsError(f"time: missing unit in duration {_go_quote(text)}")
        unit_text, s = s[:i], s[i:]
        unit = _UNIT_NANOSECONDS.get(unit_text)
        if unit is None:
            raise SettingsError(f"time: unknown unit {_go_quote(unit_text)} in duration "
                                f"{_go_quote(text)}")
        if v > _MAX // unit:
            raise invalid
        v *= unit
        if f > 0:
            v += int(float(f) * (float(unit) / scale))
            if v > _MAX:
                raise invalid
        total += v
        if total > _MAX:
            raise invalid
    if neg:
        return -total
    if total > _MAX - 1:
        raise invalid
    return total


def _go_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_duration(text: str) -> timedelta:
    """A Go duration string (``300ms``, ``1.5h``, ``2h45m``), exactly as Go accepts it."""
    return timedelta(microseconds=go_duration_ns(text) / 1000)


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
        if not from_env:
            return parse_duration(raw)
        try:
            return parse_duration(raw)
        except SettingsError as exc:
            raise IgnoredEnvValue(str(exc)) from None
    if kind is Path:
        return Path(raw)
    if origin is tuple:
        return tuple(item.strip() for item in raw.split(",") if item.strip())
    if origin in (dict, Mapping) or kind is dict:
        return parse_key_values(raw)
    return raw
