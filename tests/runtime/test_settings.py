"""runtime.settings and runtime.values: Go's flag and ParseBool rules, and the boolean forms
the adaptor accepted beyond them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import ClassVar

import pytest

from runtime.settings import (
    SettingsError,
    build,
    flags_of,
    parse_bool,
    parse_flag_bool,
    parse_settings,
    scan,
    setting,
    usage,
)

# Durations: tests/runtime/test_durations.py (Go's own ParseDuration tables).


def test_flag_booleans() -> None:
    for text in ("1", "t", "T", "TRUE", "true", "True"):  # Go's ParseBool
        assert parse_flag_bool(text) is True
    for text in ("0", "f", "F", "FALSE", "false", "False"):
        assert parse_flag_bool(text) is False
    for text in ("yes", "On", "y", "tRuE", " true "):  # kept from the adaptor; Go rejects
        assert parse_flag_bool(text) is True
    for text in ("no", "OFF", "n", ""):
        assert parse_flag_bool(text) is False
    for text in ("2", "maybe", "truth"):
        with pytest.raises(SettingsError, match="invalid boolean value"):
            parse_flag_bool(text)


def test_env_booleans_follow_upstream() -> None:
    assert parse_bool("1") and parse_bool("TRUE") and parse_bool("true")
    assert not parse_bool("yes") and not parse_bool("t") and not parse_bool("on")


@dataclass(frozen=True)
class Demo:
    TITLE: ClassVar[str] = "demo settings"

    name: str = setting(env="DEMO_NAME", flag="name", default="x", help="a name")
    wait: timedelta = setting(env="DEMO_WAIT", flag="wait", default=timedelta(minutes=5))
    on: bool = setting(env="DEMO_ON", flag="on", default=False, help="a switch")
    count: int = setting(flag="--count", aliases=("c",), default=1, help="how many")
    token: str = setting(env="DEMO_TOKEN", flag="token", default="", secret=True)


def test_env_then_flag_and_sources_in_errors() -> None:
    env = {"DEMO_NAME": "from-env", "DEMO_ON": "1", "DEMO_WAIT": ""}
    s = parse_settings(Demo, [], env)
    assert (s.name, s.on, s.wait) == ("from-env", True, timedelta(minutes=5))
    s = parse_settings(Demo, ["-name=flag", "--on=false", "-c", "3"], env)
    assert (s.name, s.on, s.count) == ("flag", False, 3)
    with pytest.raises(SettingsError, match=r"^--count: invalid integer 'x'$"):
        parse_settings(Demo, ["--count", "x"], {})
    with pytest.raises(SettingsError, match=r"^-wait: time: invalid duration"):
        parse_settings(Demo, ["-wait=soon"], {})


def test_scan_stops_at_an_argument_when_asked() -> None:
    parsed = scan(["-on", "cmd", "-name", "y"], flags_of(Demo), stop_at_argument=True)
    assert parsed.args == ("cmd", "-name", "y")
    assert build(Demo, parsed, {}).on is True
    with pytest.raises(SettingsError, match="unexpected argument 'cmd'"):
        scan(["cmd"], flags_of(Demo))


def test_usage_lists_every_flag_in_go_layout() -> None:
    text = usage(flags_of(Demo), Demo.TITLE)
    assert text.splitlines()[:3] == ["demo settings:", "  -name string",
                                     '    \ta name [env DEMO_NAME] (default "x")']
    assert "  -wait duration\n" in text and "(default 5m)" in text
    assert "  -on\n" in text and "  -c, --count int\n" in text
    assert "  -token string\n" in text
