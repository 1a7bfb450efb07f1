"""Log lines cannot be forged through logged values: controls are escaped in every format."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest

from adaptor.logformat import JsonFormatter, TextFormatter
from runtime.logsafe import EscapingFormatter, escape_controls, escape_root_handlers

POD = "nginx\n2026/01/01 00:00:00 [adaptor.manager] sandbox=x: pod VM deleted\r\x1b[2K"
LINE = "create a sandbox %s for pod %s in namespace %s (netns: %s)"


def _record(*args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("adaptor.manager", logging.INFO, __file__, 1, LINE, args, None)
    record.__dict__.update(extra)
    return record


def test_escape_controls() -> None:
    assert escape_controls("a\nb\rc\td\x00e\x1bf\x7fg\x85h\u2028i\u202ej") == (
        "a\\nb\\rc\\td\\x00e\\x1bf\\x7fg\\x85h\\u2028i\\u202ej"
    )
    plain = "pod-é-日本-/run/netns/cni-1 \\n stays"
    assert escape_controls(plain) == plain


def test_text_format_keeps_one_line() -> None:
    text = TextFormatter().format(_record("sb1", POD, "default", "/run/netns/cni-1"))
    assert "\n" not in text and "\r" not in text and "\x1b" not in text
    assert text.endswith("for pod nginx\\n2026/01/01 00:00:00 [adaptor.manager] sandbox=x: "
                         "pod VM deleted\\r\\x1b[2K in namespace default (netns: /run/netns/cni-1)")


def test_json_format_escapes_message_and_extras() -> None:
    out = JsonFormatter().format(_record("sb1", POD, "ns\u2028x", "/p", pod=POD))
    assert "\n" not in out and "\u2028" not in out
    body = json.loads(out)
    assert "\n" not in body["msg"] and "\x1b" not in body["msg"]
    assert "for pod nginx\\n2026" in body["msg"]
    assert "namespace ns\\u2028x" in body["msg"]
    assert body["pod"].startswith("nginx\\n2026")


def test_traceback_keeps_its_lines() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("a", logging.ERROR, __file__, 1, "failed %s", ("x\ny",),
                                   sys.exc_info())
    text = TextFormatter().format(record)
    first, *rest = text.split("\n")
    assert first.endswith("failed x\\ny")
    assert rest[0] == "Traceback (most recent call last):"


@pytest.fixture
def root_stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = root.handlers[:]
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s [x] %(message)s"))
    root.handlers[:] = [handler]
    try:
        escape_root_handlers()
        yield stream
    finally:
        root.handlers[:] = saved


def test_forwarder_log_setup_escapes(root_stream: io.StringIO) -> None:
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler.formatter, EscapingFormatter)
    logging.getLogger("forwarder.apf.interceptor").warning("CreateContainer: containerID:%s",
                                                           "c1\nINFO [x] forged")
    assert root_stream.getvalue() == (
        "WARNING [x] CreateContainer: containerID:c1\\nINFO [x] forged\n"
    )
