"""One declaration per knob: env var name, flag, default, help, secrecy.

Settings follow upstream cloud-api-adaptor: a non-empty env var becomes the default, a
command-line flag overrides it. Flags are accepted Go-style (``-pods-dir x``,
``-pods-dir=x``) and GNU-style (``--pods-dir x``). Booleans from env are true for ``1`` or
``true`` in any case, false otherwise. Durations use Go's form (``5m``, ``90s``, ``1h30m``).

Settings are parsed once at startup and passed down; nothing else reads ``os.environ``.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any, TypeVar

from runtime.errors import UsageError

T = TypeVar("T")

REDACTED = "***"


@dataclasses.dataclass(frozen=True, slots=True)
class SettingSpec:
    env: str | None
    flag: str | None
    help: str
    secret: bool
    required: bool


def setting(
    *,
    env: str | None = None,
    flag: str | None = None,
    default: Any = None,
    help: str = "",
    secret: bool = False,
    required: bool = False,
) -> Any:
    """Declare one setting as a dataclass field (the default must be immutable)."""
    spec = SettingSpec(env=env, flag=flag, help=help, secret=secret, required=required)
    return dataclasses.field(default=default, metadata={"setting": spec})


class SettingsError(UsageError):
    """A setting has a value that cannot be parsed, or a required one is missing."""


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
}


def parse_duration(text: str) -> timedelta:
    """Parse a Go duration string (``300ms``, ``1.5h``, ``2h45m``). A bare number is seconds."""
    value = text.strip()
    if not value:
        raise SettingsError("empty duration")
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return timedelta(seconds=float(value))
    sign = -1.0 if value.startswith("-") else 1.0
    body = value.lstrip("+-")
    if body == "0":
        return timedelta(0)
    pos, total = 0, 0.0
    while pos < len(body):
        match = _DURATION_PART.match(body, pos)
        if match is None:
            raise SettingsError(f"invalid duration {text!r}")
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    return timedelta(seconds=sign * total)


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


def _parse_flag_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "t", "true", "yes", "y", "on"):
        return True
    if lowered in ("0", "f", "false", "no", "n", "off", ""):
        return False
    raise SettingsError(f"invalid boolean {text!r}")


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


def _base_type(annotation: Any) -> Any:
    """``str | None`` -> ``str``; other annotations unchanged."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def convert(annotation: Any, raw: str, *, from_env: bool) -> Any:
    """Turn a raw string into the field's type."""
    kind = _base_type(annotation)
    origin = typing.get_origin(kind)
    if kind is bool:
        return parse_bool(raw) if from_env else _parse_flag_bool(raw)
    if kind is int:
        try:
            return int(raw.strip())
        except ValueError:
            raise SettingsError(f"invalid integer {raw!r}") from None
    if kind is float:
        try:
            return float(raw.strip())
        except ValueError:
            raise SettingsError(f"invalid number {raw!r}") from None
    if kind is timedelta:
        return parse_duration(raw)
    if origin is tuple:
        return tuple(item.strip() for item in raw.split(",") if item.strip())
    if origin in (dict, Mapping) or kind is dict:
        return parse_key_values(raw)
    return raw


def _fields(cls: type) -> list[tuple[dataclasses.Field[Any], SettingSpec, Any]]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get("setting")
        if spec is not None:
            out.append((f, spec, hints[f.name]))
    return out


def _flag_names(flag: str) -> list[str]:
    name = flag.lstrip("-")
    return [f"-{name}", f"--{name}"] if len(name) > 1 else [f"-{name}"]


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Register one option per flagged setting of ``cls``. Values stay raw strings."""
    group = parser.add_argument_group(getattr(cls, "TITLE", cls.__name__))
    for f, spec, annotation in _fields(cls):
        if spec.flag is None:
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        if isinstance(default, timedelta):
            default = format_duration(default)
        shown = REDACTED if spec.secret and default else default
        text = spec.help
        if spec.env:
            text += f" [env {spec.env}]"
        if shown not in (None, "", (), {}):
            text += f" (default {shown})"
        if spec.required:
            text += " (required)"
        kwargs: dict[str, Any] = {"dest": f"{cls.__name__}.{f.name}", "default": None}
        if _base_type(annotation) is bool:
            kwargs.update(nargs="?", const="true", metavar="BOOL")
        else:
            kwargs["metavar"] = f.name.upper()
        group.add_argument(*_flag_names(spec.flag), help=text.replace("%", "%%"), **kwargs)


def from_namespace(
    cls: type[T], namespace: argparse.Namespace, env: Mapping[str, str]
) -> T:
    """Build ``cls`` from parsed flags and the environment (env, then flag)."""
    values: dict[str, Any] = {}
    missing: list[str] = []
    for f, spec, annotation in _fields(cls):
        raw_flag = getattr(namespace, f"{cls.__name__}.{f.name}", None)
        raw_env = env.get(spec.env, "") if spec.env else ""
        try:
            if raw_flag is not None:
                values[f.name] = convert(annotation, raw_flag, from_env=False)
            elif raw_env != "":
                values[f.name] = convert(annotation, raw_env, from_env=True)
        except SettingsError as exc:
            source = spec.flag and f"-{spec.flag.lstrip('-')}" if raw_flag is not None else spec.env
            raise SettingsError(f"{source}: {exc}") from None
        if spec.required and values.get(f.name, f.default) in (None, "", ()):
            missing.append(spec.env or f"-{(spec.flag or f.name).lstrip('-')}")
    if missing:
        raise SettingsError(f"missing required setting(s): {', '.join(missing)}")
    return cls(**values)


def parse_settings(
    cls: type[T], argv: Sequence[str], env: Mapping[str, str], prog: str | None = None
) -> T:
    """Parse ``argv`` for the settings of ``cls`` alone (convenient for tests and tools)."""
    parser = argparse.ArgumentParser(prog=prog, allow_abbrev=False)
    add_arguments(parser, cls)
    namespace = parser.parse_args(list(argv))
    return from_namespace(cls, namespace, env)


def describe(settings: Any) -> dict[str, Any]:
    """The settings as a dict fit for logging: secrets are ``'***'`` when set."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(settings):
        spec = f.metadata.get("setting")
        value = getattr(settings, f.name)
        if spec is not None and spec.secret and value not in (None, ""):
            value = REDACTED
        elif isinstance(value, timedelta):
            value = format_duration(value)
        out[f.name] = value
    return out
