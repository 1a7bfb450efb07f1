"""Project-wide test configuration: skip privileged tests where they cannot run."""

from __future__ import annotations

import os
import shutil

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    is_root = os.geteuid() == 0
    has_ip = shutil.which("ip") is not None
    for item in items:
        if ("root" in item.keywords or "netns" in item.keywords) and not is_root:
            item.add_marker(pytest.mark.skip(reason="needs root (CI runs as root)"))
        elif "netns" in item.keywords and not has_ip:
            item.add_marker(pytest.mark.skip(reason="needs iproute2 (ip) for network namespaces"))
