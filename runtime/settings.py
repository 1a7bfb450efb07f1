"""One declaration per knob (env var name, flag, default, help, secrecy) and one command-line
syntax for every program: ``cloud-api-adaptor``, ``agent-protocol-forwarder`` and
``process-user-data``.

Flags follow Go's ``flag`` package: ``-name value``, ``-name=value``, ``--name value``,
``--name=value``; a boolean flag is set by ``-name`` alone or given a value with
``-name=false``; ``--`` ends the flags; ``-h``/``-help``/``--help`` ask for help.

Values (:mod:`runtime.values`): a non-empty env var becomes the default and a flag overrides
it, as upstream's ``FlagRegistrar`` does. Env booleans are true for ``1`` or ``true`` in any
case (upstream's rule). Flag booleans and durations are parsed as Go's ``strconv.ParseBool``
and ``time.ParseDuration`` parse them, plus the few forms listed there that the adaptor
always accepted.

Settings are parsed once at startup and passed down; nothing else reads ``os.environ``.
"""

from __future__ import annotations

import dataclasses
import logging
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from runtime.values import (
    IgnoredEnvValue,
    SettingsError,
    base_type,
    convert,
    format_duration,
    parse_bool,
    parse_duration,
    parse_flag_bool,
    parse_key_values,
)

__all__ = [
    "REDACTED", "Flag", "ParsedFlags", "SettingSpec", "SettingsError", "build", "describe",
    "flags_of", "format_duration", "parse_bool", "parse_duration", "parse_flag_bool",
    "parse_key_values", "parse_settings", "scan", "setting", "usage",
]

T = TypeVar("T")

log = logging.getLogger("runtime.settings")

REDACTED = "***"
HELP_FLAGS = frozenset({"h", "help"})


@dataclasses.dataclass(frozen=True, slots=True)
class SettingSpec:
    env: str | None
    flag: str | None  # as shown in help: "pods-dir" shows as -pods-dir, "--tpm-device" as is
    help: str
    secret: bool
    required: bool
    aliases: tuple[str, ...] = ()  # more flag names for the same setting ("t")
    parse: Callable[[str], Any] | None = None  # replaces the conversion by type
    metavar: str | None = None  # the value's name in help (default: its Go type name)


def setting(
    *,
    env: str | None = None,
    flag: str | None = None,
    default: Any = None,
    help: str = "",
    secret: bool = False,
    required: bool = False,
    aliases: tuple[str, ...] = (),
    parse: Callable[[str], Any] | None = None,
    metavar: str | None = None,
) -> Any:
    """Declare one setting as a dataclass field (the default must be immutable)."""
    spec = SettingSpec(env=env, flag=flag, help=help, secret=secret, required=required,
                       aliases=aliases, parse=parse, metavar=metavar)
    return dataclasses.field(default=default, metadata={"setting": spec})


def _fields(cls: type) -> list[tuple[dataclasses.Field[Any], SettingSpec, Any]]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get("setting")
        if spec is not None:
            out.append((f, spec, hints[f.name]))
    return out


# ------------------------------------------------------------------------- flags


@dataclasses.dataclass(frozen=True, slots=True)
class Flag:
    """One command-line flag: its names (without dashes) and where its value goes."""

    names: tuple[str, ...]
    dest: str  # "<class name>.<field name>"
    is_bool: bool
    shown: str  # "-pods-dir", "-t, --user-data-fetch-timeout"
    metavar: str
    help: str


def _shown(name: str) -> str:
    return name if name.startswith("-") else f"-{name}"


def _type_word(annotation: Any, spec: SettingSpec) -> str:
    if spec.metavar is not None:
        return spec.metavar
    kind = base_type(annotation)
    if kind is bool:
        return ""
    words = {int: "int", float: "float", timedelta: "duration", str: "string", Path: "path"}
    return words.get(kind, "value")


def _default_text(f: dataclasses.Field[Any], spec: SettingSpec) -> str:
    default = f.default if f.default is not dataclasses.MISSING else None
    if default in (None, "", (), {}, False):
        return ""
    if spec.secret:
        return f" (default {REDACTED})"
    if isinstance(default, timedelta):
        return f" (default {format_duration(default)})"
    if isinstance(default, tuple):
        return f" (default {','.join(str(v) for v in default)})"
    if isinstance(default, (str, Path)):
        return f' (default "{default}")'
    if isinstance(default, float):
        return f" (default {default:g})"
    return f" (default {default})"


def flags_of(cls: type) -> list[Flag]:
    """The flags declared by the settings class ``cls``, in declaration order."""
    flags = []
    for f, spec, annotation in _fields(cls):
        if spec.flag is None:
            continue
        declared = (*spec.aliases, spec.flag)
        text = spec.help + (f" [env {spec.env}]" if spec.env else "")
        text += _default_text(f, spec) + (" (required)" if spec.required else "")
        flags.append(Flag(
            names=tuple(name.lstrip("-") for name in declared),
            dest=f"{cls.__name__}.{f.name}",
            is_bool=base_type(annotation) is bool,
            shown=", ".join(_shown(name) for name in declared),
            metavar=_type_word(annotation, spec),
            help=text,
        ))
    return flags


@dataclasses.dataclass(frozen=True, slots=True)
class ParsedFlags:
    values: Mapping[str, str]  # dest -> raw text ("true" for a bare boolean flag)
    sources: Mapping[str, str]  # dest -> the flag as written, for error messages
    help: bool = False
    args: tuple[str, ...] = ()  # what follows the flags (only with stop_at_argument)


def _index(flags: Iterable[Flag]) -> dict[str, Flag]:
    by_name: dict[str, Flag] = {}
    for flag in flags:
        for name in flag.names:
            if name in by_name:
                raise ValueError(f"flag -{name} declared twice")
            by_name[name] = flag
    return by_name


def _is_bool_word(text: str) -> bool:
    try:
        parse_flag_bool(text)
    except SettingsError:
        return False
    return True


def scan(
    argv: Sequence[str], flags: Iterable[Flag], *, stop_at_argument: bool = False
) -> ParsedFlags:
    """Read flags from ``argv`` with Go's rules (see the module docstring).

    A bare boolean flag also takes a following word that is a boolean (``-disable-tls
    false``), as the adaptor always did. An argument that is not a flag is an error, unless
    ``stop_at_argument``: then it and everything after it are returned in ``args``.
    """
    by_name = _index(flags)
    values: dict[str, str] = {}
    sources: dict[str, str] = {}
    args = list(argv)
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg == "--":
            break
        if len(arg) < 2 or not arg.startswith("-"):
            index -= 1
            break
        body = arg[2:] if arg.startswith("--") else arg[1:]
        name, has_value, value = body.partition("=")
        flag = by_name.get(name)
        if flag is None and name in HELP_FLAGS:
            return ParsedFlags(values, sources, help=True)
        if flag is None or not name or name.startswith("-"):
            raise SettingsError(f"flag provided but not defined: -{name}")
        if not has_value:
            if flag.is_bool:
                value = "true"
                if index < len(args) and _is_bool_word(args[index]):
                    value, index = args[index], index + 1
            elif index < len(args):
                value, index = args[index], index + 1
            else:
                raise SettingsError(f"flag needs an argument: -{name}")
        values[flag.dest] = value
        sources[flag.dest] = arg.partition("=")[0]
    rest = tuple(args[index:])
    if rest and not stop_at_argument:
        raise SettingsError(f"unexpected argument {rest[0]!r}")
    return ParsedFlags(values, sources, args=rest)


def usage(flags: Iterable[Flag], title: str | None = None) -> str:
    """Help for ``flags`` in the layout of Go's ``flag.PrintDefaults``."""
    lines = [f"{title}:"] if title else []
    for flag in flags:
        lines.append(f"  {flag.shown} {flag.metavar}".rstrip())
        lines.append(f"    \t{flag.help}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------- values


def _env_value(cls: type, spec: SettingSpec, env: Mapping[str, str]) -> str | None:
    """The env var's value, if it counts: upstream ignores empty ones, unless the class says
    ``EMPTY_ENV_IS_SET = True`` (process-user-data's own variables)."""
    if not spec.env or spec.env not in env:
        return None
    raw = env[spec.env]
    if raw == "" and not getattr(cls, "EMPTY_ENV_IS_SET", False):
        return None
    return raw


def build(cls: type[T], parsed: ParsedFlags, env: Mapping[str, str]) -> T:
    """Build ``cls`` from the flags read by :func:`scan` and the environment."""
    values: dict[str, Any] = {}
    missing: list[str] = []
    for f, spec, annotation in _fields(cls):
        dest = f"{cls.__name__}.{f.name}"
        raw_flag = parsed.values.get(dest)
        raw_env = _env_value(cls, spec, env)
        try:
            if raw_flag is not None:
                values[f.name] = _convert(spec, annotation, raw_flag, from_env=False)
            elif raw_env is not None:
                values[f.name] = _convert(spec, annotation, raw_env, from_env=True)
        except IgnoredEnvValue as exc:
            shown = format_duration(f.default) if isinstance(f.default, timedelta) \
                else f.default
            log.warning("%s: %s: ignored, as upstream ignores it; keeping the default %s",
                        spec.env, exc, shown)
        except SettingsError as exc:
            source = parsed.sources.get(dest, "") if raw_flag is not None else spec.env
            raise SettingsError(f"{source}: {exc}") from None
        if spec.required and values.get(f.name, f.default) in (None, "", ()):
            missing.append(spec.env or _shown(spec.flag or f.name))
    if missing:
        raise SettingsError(f"missing required setting(s): {', '.join(missing)}")
    return cls(**values)


def _convert(spec: SettingSpec, annotation: Any, raw: str, *, from_env: bool) -> Any:
    if spec.parse is not None:
        return spec.parse(raw)
    return convert(annotation, raw, from_env=from_env)


def parse_settings(cls: type[T], argv: Sequence[str], env: Mapping[str, str]) -> T:
    """Parse ``argv`` for the settings of ``cls`` alone (convenient for tests and tools)."""
    return build(cls, scan(argv, flags_of(cls)), env)


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
