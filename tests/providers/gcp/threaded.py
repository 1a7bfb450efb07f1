"""The loopback Compute endpoint on an event loop of its own, in a thread: for synchronous
fixtures (the contract suite's factories) and for tests whose loop must stay free."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from tests.providers.gcp.computeserver import ComputeServer


class ThreadedComputeServer:
    def __init__(self, **kwargs: Any) -> None:
        self.server = ComputeServer(**kwargs)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="gce-fake",
                                        daemon=True)

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._thread.start()
        return asyncio.run_coroutine_threadsafe(
            self.server.start(host, port), self._loop).result(timeout=30)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self.server.aclose(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()
