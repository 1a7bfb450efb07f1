"""Durations are parsed exactly as Go's ``time.ParseDuration`` (src/time/format.go), the
parser upstream's flags use (cloud-providers/util.go, ``FlagRegistrar.DurationWithEnv``).

The tables are Go's own: ``parseDurationTests`` and ``parseDurationErrorTests`` in
src/time/time_test.go, in nanoseconds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

import pytest

from runtime.settings import SettingsError, parse_duration, parse_settings, setting
from runtime.values import go_duration_ns

NS, US, MS, S, M, H = 1, 10**3, 10**6, 10**9, 60 * 10**9, 3600 * 10**9

GO_PARSE_DURATION_TESTS = [
    ("0", 0), ("5s", 5 * S), ("30s", 30 * S), ("1478s", 1478 * S),
    ("-5s", -5 * S), ("+5s", 5 * S), ("-0", 0), ("+0", 0),
    ("5.0s", 5 * S), ("5.6s", 5 * S + 600 * MS), ("5.s", 5 * S), (".5s", 500 * MS),
    ("1.0s", 1 * S), ("1.00s", 1 * S), ("1.004s", 1 * S + 4 * MS), ("1.0040s", 1 * S + 4 * MS),
    ("100.00100s", 100 * S + 1 * MS),
    ("10ns", 10 * NS), ("11us", 11 * US), ("12µs", 12 * US), ("12μs", 12 * US),
    ("13ms", 13 * MS), ("14s", 14 * S), ("15m", 15 * M), ("16h", 16 * H),
    ("3h30m", 3 * H + 30 * M), ("10.5s4m", 4 * M + 10 * S + 500 * MS),
    ("-2m3.4s", -(2 * M + 3 * S + 400 * MS)),
    ("1h2m3s4ms5us6ns", 1 * H + 2 * M + 3 * S + 4 * MS + 5 * US + 6 * NS),
    ("39h9m14.425s", 39 * H + 9 * M + 14 * S + 425 * MS),
    ("52763797000ns", 52763797000 * NS),
    ("0.3333333333333333333h", 20 * M),
    ("9007199254740993ns", (1 << 53) + 1),
    ("9223372036854775807ns", (1 << 63) - 1),
    ("9223372036854775.807us", (1 << 63) - 1),
    ("9223372036s854ms775us807ns", (1 << 63) - 1),
    ("-9223372036854775808ns", -(1 << 63)),
    ("-9223372036854775.808us", -(1 << 63)),
    ("-9223372036s854ms775us808ns", -(1 << 63)),
    ("-2562047h47m16.854775808s", -(1 << 63)),
    ("0.100000000000000000000h", 6 * M),
    ("0.830103483285477580700h", 49 * M + 48 * S + 372539827 * NS),
]

GO_PARSE_DURATION_ERROR_TESTS = [
    "", "3", "-", "s", ".", "-.", ".s", "+.s", "1d",
    "\x85\x85", "\xffff", "hello \xffff world", "\ufffd", "\ufffd hello \ufffd world",
    "9223372036854775810ns", "9223372036854775808ns", "-9223372036854775809ns",
    "9223372036854776us", "3000000h", "9223372036854775.808us", "9223372036854ms775us808ns",
]


@pytest.mark.parametrize(("text", "nanoseconds"), GO_PARSE_DURATION_TESTS)
def test_go_parse_duration_table(text: str, nanoseconds: int) -> None:
    assert go_duration_ns(text) == nanoseconds


@pytest.mark.parametrize("text", GO_PARSE_DURATION_ERROR_TESTS)
def test_go_parse_duration_error_table(text: str) -> None:
    with pytest.raises(SettingsError, match=r"^time: (invalid duration|missing unit|unknown unit)"):
        go_duration_ns(text)


def test_go_messages_and_what_go_rejects_that_the_adaptor_once_accepted() -> None:
    with pytest.raises(SettingsError, match=r'^time: missing unit in duration "10"$'):
        parse_duration("10")
    with pytest.raises(SettingsError, match=r'^time: unknown unit "d" in duration "1d"$'):
        parse_duration("1d")
    for text in ("1.5", " 5m ", "5m ", "--5s", "1e3s"):
        with pytest.raises(SettingsError):
            parse_duration(text)
    assert parse_duration("1.5h") == timedelta(minutes=90)


@dataclass(frozen=True)
class Timeouts:
    proxy_timeout: timedelta = setting(env="PROXY_TIMEOUT", flag="proxy-timeout",
                                       default=timedelta(minutes=5))


def test_flag_that_go_rejects_is_an_error() -> None:
    # Go's flag package refuses the value: `invalid value "10" for flag -proxy-timeout`.
    with pytest.raises(SettingsError, match=r'^-proxy-timeout: time: missing unit'):
        parse_settings(Timeouts, ["-proxy-timeout=10"], {})
    assert parse_settings(Timeouts, ["-proxy-timeout=10s"], {}).proxy_timeout == \
        timedelta(seconds=10)


def test_env_that_go_rejects_keeps_the_default_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Upstream: cloud-providers/util.go, FlagRegistrar.DurationWithEnv keeps the hard-coded
    # default when time.ParseDuration fails on the env value, and says nothing.
    with caplog.at_level(logging.WARNING, logger="runtime.settings"):
        settings = parse_settings(Timeouts, [], {"PROXY_TIMEOUT": "10"})
    assert settings.proxy_timeout == timedelta(minutes=5)
    assert caplog.messages == ['PROXY_TIMEOUT: time: missing unit in duration "10": ignored, '
                               "as upstream ignores it; keeping the default 5m"]
    assert parse_settings(Timeouts, [], {"PROXY_TIMEOUT": "10s"}).proxy_timeout == \
        timedelta(seconds=10)
    # A flag still overrides the ignored env value, as Go's flag default does.
    settings = parse_settings(Timeouts, ["-proxy-timeout=1m"], {"PROXY_TIMEOUT": "x"})
    assert settings.proxy_timeout == timedelta(minutes=1)
