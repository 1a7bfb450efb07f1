"""Log lines that input cannot forge: control characters in messages are escaped.

Pod names, annotation values, container ids and paths come from the Kubernetes API, the
shim or the untrusted host, and end up in log lines. A ``\\n`` in one of them would start a
line of the attacker's choosing; ``\\r``, ANSI escapes, Unicode line separators and bidi
overrides mislead a reader in the same way. :func:`escape_controls` rewrites each of these
characters as a visible escape (``\\n``, ``\\x1b``, ``\\u2028``); everything else is kept.
"""

from __future__ import annotations

import logging
import re

# C0, DEL, C1, the Unicode line and paragraph separators, and the bidi controls.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` with every control character written as a visible escape."""
    return _CONTROLS.sub(_escape, text)


class EscapingFormatter(logging.Formatter):
    """A :class:`logging.Formatter` whose ``%(message)s`` has its controls escaped.

    A traceback appended to the line keeps its own line breaks.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)


def escape_root_handlers() -> None:
    """Give every handler of the root logger an :class:`EscapingFormatter` with the same
    format (call it right after ``logging.basicConfig``)."""
    for handler in logging.getLogger().handlers:
        old = handler.formatter or logging.Formatter()
        handler.setFormatter(EscapingFormatter(old._fmt, old.datefmt))
