"""The libvirtd that boots the pod VM image, one per test module (stopped before the
provider tests start theirs)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="module")
def podvm_libvirtd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    pytest.importorskip("libvirt")
    from tests.podvm_image.podvm import libvirtd_with_image

    with libvirtd_with_image(tmp_path_factory.mktemp("libvirtd")) as running:
        yield running
