"""The session-wide secret scan (tests/conftest.py) sees log records and subprocess logs."""

from __future__ import annotations

import logging
from pathlib import Path

from tests.fakes import leakcheck

FAKE_KEY = "-----BEGIN EC PRIVATE KEY-----"


def test_a_logged_private_key_is_caught() -> None:
    before = len(leakcheck.STATE.found)
    logging.getLogger("tests.leakcheck.selftest").debug("oops %s", FAKE_KEY)
    try:
        found = leakcheck.STATE.found[before:]
        assert found and "'tests.leakcheck.selftest'" in found[0]
        assert "PEM private key" in found[0] and FAKE_KEY not in found[0]
    finally:
        del leakcheck.STATE.found[before:]  # this leak was on purpose


def test_a_secret_in_a_subprocess_log_is_caught(tmp_path: Path) -> None:
    leakcheck.add_secret("hunter2-token-value")
    log = tmp_path / "daemon.log"
    log.write_text("2026/01/01 00:00:00 [adaptor.x] fine\n"
                   "2026/01/01 00:00:01 [providers.y] token=hunter2-token-value\n")
    before = len(leakcheck.STATE.found)
    try:
        found = leakcheck.scan_log_file(str(log), "daemon")
        assert found == leakcheck.STATE.found[before:]
        assert len(found) == 1 and "line 2" in found[0] and "'providers.y'" in found[0]
    finally:
        del leakcheck.STATE.found[before:]
