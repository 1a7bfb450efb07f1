from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.guest.kbs_server import ALLOW_ALL, KbsState, LoopbackKbs

KEY1 = b"\x00secret key bytes\xff" * 3


@pytest.fixture
async def kbs() -> AsyncIterator[LoopbackKbs]:
    server = LoopbackKbs(KbsState(policy=ALLOW_ALL, resources={"default/key/key1": KEY1}))
    await server.start()
    try:
        yield server
    finally:
        await server.aclose()
