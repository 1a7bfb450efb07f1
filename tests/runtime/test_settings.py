"""runtime.settings and runtime.values: Go's flag, ParseBool and ParseDuration rules, and the
forms the adaptor accepted beyond them."""

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
    parse_duration,
    parse_flag_bool,
    parse_settings,
    scan,
    setting,
    usage,
)

US = timedelta(microseconds=1)

# Go's time.ParseDuration test table (time_test.go), where timedelta can hold the value.
GO_DURATIONS = {
    "0": timedelta(0), "5s": timedelta(seconds=5), "30s": timedelta(seconds=30),
    "1478s": timedelta(seconds=1478), "-5s": timedelta(seconds=-5),
    "+5s": timedelta(seconds=5), "-0": timedelta(0), "+0": timedelta(0),
    "5.0s": timedelta(seconds=5), "5.6s": timedelta(seconds=5.6), "5.s": timedelta(seconds=5),
    ".5s": timedelta(seconds=0.5), "1.004s": timedelta(seconds=1.004),
    "100.00100s": timedelta(seconds=100.001), "11us": 11 * US, "12µs": 12 * US,
    "12μs": 12 * US, "13ms": timedelta(milliseconds=13), "15m": timedelta(minutes=15),
    "16h": timedelta(hours=16), "3h30m": timedelta(hours=3, minutes=30),
    "10.5s4m": timedelta(minutes=4, seconds=10.5), "-2m3.4s": -timedelta(minutes=2, seconds=3.4),
    "1h2m3s4ms5us": timedelta(hours=1, minutes=2, seconds=3, milliseconds=4, microseconds=5),
    "39h9m14.425s": timedelta(hours=39, minutes=9, seconds=14.425),
    "52763797000ns": timedelta(seconds=52.763797), "0.3333333333333333333h": timedelta(minutes=20),
}
GO_INVALID_DURATIONS = ["", "-", "s", ".", "-.", ".s", "+.s", "5x", "1h-2m", "5 minutes",
                        "1e3s"]


@pytest.mark.parametrize(("text", "expected"), sorted(GO_DURATIONS.items()))
def test_durations_as_go_parses_them(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", GO_INVALID_DURATIONS)
def test_durations_go_rejects(text: str) -> None:
    with pytest.raises(SettingsError, match="duration"):
        parse_duration(text)


def test_durations_the_adaptor_accepts_beyond_go() -> None:
    assert parse_duration("90") == timedelta(seconds=90)  # Go: missing unit
    assert parse_duration("1.5") == timedelta(seconds=1.5)
    assert parse_duration(" 5m ") == timedelta(minutes=5)  # Go: invalid
    with pytest.raises(SettingsError, match="out of range"):
        parse_duration("99999999999999999h")


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
    with pytest.raises(SettingsError, match=r"^DEMO_WAIT: invalid duration"):
        parse_settings(Demo, [], {"DEMO_WAIT": "soon"})


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
