"""Secret scan over every log line the test suite produces.

``tests/conftest.py`` installs :class:`CaptureHandler` on the root logger (DEBUG) for the
whole session and calls :func:`violations` at the end; tests scan the log files of the
daemons they run as subprocesses before removing them (:func:`scan_log_file`) and add the
secret values they use (:func:`add_secret`). A private key in PEM form is always a leak.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass, field

PEM_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")

# Secret values used by tests across the suite (settings marked secret, fake credentials).
KNOWN_SECRETS = ("s3cr3t",)


@dataclass
class _State:
    secrets: set[str] = field(default_factory=lambda: set(KNOWN_SECRETS))
    files: int = 0
    found: list[str] = field(default_factory=list)
    lines: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


STATE = _State()


def add_secret(value: str) -> None:
    if len(value) < 6:
        raise ValueError("secrets to scan for must be at least 6 characters long")
    with STATE.lock:
        STATE.secrets.add(value)


def leaks_in(text: str) -> list[str]:
    """What in ``text`` is a secret (the pattern or value name, never the value itself)."""
    found = ["a PEM private key"] if PEM_PRIVATE_KEY.search(text) else []
    with STATE.lock:
        secrets = list(STATE.secrets)
    found += [f"secret value #{sorted(secrets).index(s)}" for s in secrets if s in text]
    return found


class CaptureHandler(logging.Handler):
    """Scans each record as it is emitted (message, arguments and traceback)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self._formatter = logging.Formatter("%(message)s")

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self._formatter.format(record)
        except Exception:  # a broken log call is not this handler's business
            return
        STATE.lines += 1
        for what in leaks_in(text):
            STATE.found.append(f"logger {record.name!r} ({record.pathname}:{record.lineno}) "
                               f"logged {what}")


def scan_log_file(path: str, label: str) -> list[str]:
    """Scan a subprocess's log now; what leaks is recorded (and returned)."""
    out: list[str] = []
    with open(path, errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            for what in leaks_in(line):
                logger = re.search(r"\[([\w.]+)\]", line)
                name = logger.group(1) if logger else "?"
                out.append(f"{label} line {number}: logger {name!r} logged {what}")
    with STATE.lock:
        STATE.files += 1
        STATE.found.extend(out)
    return out


def violations() -> list[str]:
    with STATE.lock:
        return list(STATE.found)
