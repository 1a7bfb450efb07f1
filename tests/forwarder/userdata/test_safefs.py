"""Confined, atomic writes: symlinks at the target or in a parent never redirect a write."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from forwarder.userdata.errors import UnsafePathError
from forwarder.userdata.safefs import SafeDir


@pytest.fixture
def root(tmp_path: Path) -> Iterator[SafeDir]:
    with SafeDir.open(tmp_path / "root") as opened:
        yield opened


def test_write_creates_parents_with_modes(root: SafeDir) -> None:
    old = os.umask(0o077)
    try:
        root.write("a/b/file", b"data", 0o600)
    finally:
        os.umask(old)
    assert (root.path / "a" / "b" / "file").read_bytes() == b"data"
    assert stat.S_IMODE((root.path / "a").stat().st_mode) == 0o755
    assert stat.S_IMODE((root.path / "a" / "b" / "file").stat().st_mode) == 0o600


def test_write_replaces_and_fixes_mode(root: SafeDir) -> None:
    target = root.path / "f"
    target.write_text("old")
    target.chmod(0o666)
    root.write("f", b"new", 0o600)
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in root.path.iterdir()) == ["f"]  # no temp file left


def test_symlink_in_parent_is_refused(tmp_path: Path, root: SafeDir) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (root.path / "sub").symlink_to(outside)
    with pytest.raises(UnsafePathError, match="symlink"):
        root.write("sub/file", b"x", 0o600)
    assert list(outside.iterdir()) == []


def test_symlink_at_target_is_refused(tmp_path: Path, root: SafeDir) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (root.path / "f").symlink_to(victim)
    with pytest.raises(UnsafePathError, match="symlink"):
        root.write("f", b"x", 0o600)
    with pytest.raises(UnsafePathError, match="symlink"):
        root.read("f", 100)
    assert victim.read_text() == "keep"


def test_dangling_symlink_at_target_is_refused(tmp_path: Path, root: SafeDir) -> None:
    (root.path / "f").symlink_to(tmp_path / "would-be-created")
    with pytest.raises(UnsafePathError):
        root.write("f", b"x", 0o600)
    assert not (tmp_path / "would-be-created").exists()
    assert root.exists("f")


def test_directory_at_target_is_refused(root: SafeDir) -> None:
    (root.path / "d").mkdir()
    with pytest.raises(UnsafePathError, match="not a regular file"):
        root.write("d", b"x", 0o600)


@pytest.mark.parametrize("relpath", ["../x", "a/../../x", "/etc/x", "", "a//b", "./a", "a\0b"])
def test_non_plain_paths_are_refused(tmp_path: Path, root: SafeDir, relpath: str) -> None:
    with pytest.raises(UnsafePathError, match="not a plain relative path"):
        root.write(relpath, b"x", 0o600)
    assert not (tmp_path / "x").exists()


def test_read_limit(root: SafeDir) -> None:
    (root.path / "f").write_bytes(b"12345")
    assert root.read("f", 5) == b"12345"
    with pytest.raises(OSError, match="larger than 4 bytes"):
        root.read("f", 4)
    with pytest.raises(FileNotFoundError):
        root.read("missing", 4)


def test_open_refuses_symlinked_root(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(UnsafePathError):
        SafeDir.open(tmp_path / "link")
