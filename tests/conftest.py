"""Project-wide test configuration: skip privileged tests where they cannot run, and scan
every log line of the session for secrets."""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any

import pytest

from tests.fakes import leakcheck


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    is_root = os.geteuid() == 0
    has_ip = shutil.which("ip") is not None
    for item in items:
        if ("root" in item.keywords or "netns" in item.keywords) and not is_root:
            item.add_marker(pytest.mark.skip(reason="needs root (CI runs as root)"))
        elif "netns" in item.keywords and not has_ip:
            item.add_marker(pytest.mark.skip(reason="needs iproute2 (ip) for network namespaces"))


# --- secret scan: every log record of the session is checked (tests.fakes.leakcheck) ------
_LEAK_CAPTURE = leakcheck.CaptureHandler()


def pytest_configure(config: pytest.Config) -> None:
    root = logging.getLogger()
    root.addHandler(_LEAK_CAPTURE)
    root.setLevel(logging.DEBUG)


def pytest_runtest_setup(item: pytest.Item) -> None:
    # A test may have run a daemon's main() in-process, which sets its own level.
    logging.getLogger().setLevel(logging.DEBUG)
    if _LEAK_CAPTURE not in logging.getLogger().handlers:
        logging.getLogger().addHandler(_LEAK_CAPTURE)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if leakcheck.violations():
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    found = leakcheck.violations()
    if found:
        terminalreporter.section("SECRETS IN LOGS", sep="!", red=True, bold=True)
        for line in found:
            terminalreporter.write_line(f"LEAK: {line}", red=True)
