from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.forwarder.apf.helpers import FakeAgent, Pki, make_pki


@pytest.fixture(scope="session")
def pki() -> Pki:
    return make_pki()


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[FakeAgent]:
    fake = await FakeAgent(str(tmp_path / "agent.sock")).start()
    yield fake
    fake.release.set()
    await fake.stop()
