"""README.md stays true: every setting is documented, the commands it prints exist."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from adaptor.config import AdaptorSettings
from providers import registry
from providers.base import ConfigError

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _settings_classes() -> list[type]:
    classes: list[type] = [AdaptorSettings]
    for name in registry.names():
        try:
            classes.append(registry.load(name).Settings)
        except ConfigError:
            continue  # a provider not in this build
    return classes


@pytest.mark.parametrize("cls", _settings_classes(), ids=lambda c: c.__name__)
def test_every_setting_is_documented(cls: type) -> None:
    missing = []
    for field in dataclasses.fields(cls):
        spec = field.metadata.get("setting")
        if spec is None:
            continue
        name = spec.env or f"-{(spec.flag or field.name).lstrip('-')}"
        if f"`{name}`" not in README:
            missing.append(name)
    assert not missing, f"README.md does not document: {', '.join(missing)}"


def test_settings_tables_are_current() -> None:
    """The configuration tables are the output of scripts/settings-table."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "settings-table")],
        capture_output=True, text=True, check=True,
    ).stdout
    assert out.strip() in README, "regenerate the tables: scripts/settings-table"


def test_quick_start_and_test_commands_exist() -> None:
    commands = re.findall(r"^bash (\S+)", README, flags=re.MULTILINE)
    assert {"scripts/install.sh", "scripts/quickstart.sh", ".ci/run"} <= set(commands)
    for path in commands:
        assert (ROOT / path).is_file(), path
    ci = (ROOT / ".ci" / "run").read_text()
    assert ".venv/bin/python -m pytest -q" in README
    assert ci.rstrip().endswith(".venv/bin/python -m pytest -q")
    assert "bash scripts/install.sh\nbash scripts/quickstart.sh" in ci
