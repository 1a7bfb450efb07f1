"""deploy/ as the tests see it: the overlays, rendered with ``kubectl kustomize``, and the
files they are made of."""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
DEPLOY = ROOT / "deploy"
OVERLAYS = ("aws", "azure", "gcp", "libvirt", "local")
NAMESPACE = "confidential-containers-system"
WEBHOOK_NAMESPACE = "peer-pods-webhook-system"

Doc = dict[str, Any]


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.skip("kubectl is not installed")
    return found


@functools.cache
def _render(overlay: str) -> str:
    return subprocess.run([kubectl(), "kustomize", str(DEPLOY / "overlays" / overlay)],
                          capture_output=True, text=True, check=True).stdout


def rendered(overlay: str) -> list[Doc]:
    """The objects ``kubectl apply -k deploy/overlays/<overlay>`` would send."""
    return [d for d in yaml.safe_load_all(_render(overlay)) if d]


def _kustomization(directory: Path) -> Doc:
    doc = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


def files_of(directory: Path) -> list[Doc]:
    """The objects a kustomization's own resource files hold (not its bases)."""
    docs: list[Doc] = []
    for name in _kustomization(directory).get("resources", []):
        path = directory / name
        if path.is_dir():
            continue
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def overlay_files(overlay: str) -> list[Doc]:
    """Base, components and overlay files of ``overlay``, before any patch."""
    directory = DEPLOY / "overlays" / overlay
    docs = files_of(DEPLOY / "base") + files_of(directory)
    for component in _kustomization(directory).get("components", []):
        docs += files_of((directory / component).resolve())
    return docs


def only(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def pod_spec(doc: Doc) -> Doc:
    spec = doc["spec"]["template"]["spec"]
    assert isinstance(spec, dict)
    return spec
