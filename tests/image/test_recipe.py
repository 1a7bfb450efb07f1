"""The image recipe holds together without building it: the Dockerfile copies every package
of the project, the build context (.dockerignore) lets each in, and image/build's cache key
covers each (a package left out would be missing from the image, or changing it would not
rebuild the image)."""

from __future__ import annotations

import re
import subprocess
import tomllib

from tests.image.builtimage import BUILD, REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PACKAGES = [p.rstrip("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]]
DOCKERFILE = (REPO / "Dockerfile").read_text()


def _copied() -> set[str]:
    """The sources of the Dockerfile's COPY lines that take from the build context."""
    sources: set[str] = set()
    for line in DOCKERFILE.splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            sources.update(line.split()[1:-1])
    return sources


def test_every_package_is_copied_let_in_and_hashed() -> None:
    inputs = subprocess.run(["bash", str(BUILD), "--print-inputs"], check=True,
                            capture_output=True, text=True).stdout.split()
    allowed = {line[1:] for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.startswith("!")}
    for package in PACKAGES:
        assert package in _copied(), f"the Dockerfile does not COPY {package}"
        assert package in allowed, f".dockerignore keeps {package} out"
        assert package in inputs, f"image/build's key does not cover {package}"


def test_every_context_file_is_hashed() -> None:
    inputs = subprocess.run(["bash", str(BUILD), "--print-inputs"], check=True,
                            capture_output=True, text=True).stdout.split()
    for source in _copied():
        assert source in inputs or source.split("/")[0] in inputs, source
        assert (REPO / source).exists(), source


def test_the_base_pinning_note_is_kept() -> None:
    assert re.search(r"^ARG BASE=python:3\.11-slim-bookworm$", DOCKERFILE, flags=re.MULTILINE)
    assert "pin it by digest" in DOCKERFILE
