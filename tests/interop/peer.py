"""Drive the Go ttrpc peer (tests/interop/go/bin/ttrpc-peer) from Python tests.

    with GoServer("unix:/tmp/x/go.sock", events=True) as server:   # or: async with
        ...                                  # server.address, server.events (list of dicts)
    result = await run_client("unix:/tmp/x/py.sock", "concurrent")  # parsed JSON object

The binary is built by .ci/setup.d/20-go-interop.sh; ``require_peer()`` skips the calling
test with the reason when it is missing. tests/interop/README.md documents the peer.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

PEER = Path(__file__).resolve().parent / "go" / "bin" / "ttrpc-peer"
BUILD_HINT = "bash .ci/setup.d/20-go-interop.sh"


class PeerError(RuntimeError):
    """The Go peer failed to start or a client scenario failed."""


def require_peer() -> Path:
    """The peer binary, or skip the test saying how to build it."""
    if not PEER.is_file():
        pytest.skip(f"Go ttrpc peer not built ({PEER}); build it with: {BUILD_HINT}")
    return PEER


class GoServer:
    """``ttrpc-peer server`` on ``address`` (unix:PATH or tcp:HOST:PORT; port 0 is allowed).

    ``start()`` returns once the peer printed ``ready``; ``address`` is then the bound one.
    With ``events=True`` every hypervisor.Hypervisor call the peer completes is appended to
    ``events`` as a dict (see README.md). The peer exits when its stdin closes, so it cannot
    outlive the test process.
    """

    def __init__(self, address: str, *, events: bool = False, start_timeout: float = 10.0) -> None:
        self.address = address
        self.events: list[dict[str, Any]] = []
        self._with_events = events
        self._start_timeout = start_timeout
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._changed = threading.Condition()

    def start(self) -> GoServer:
        args = [str(require_peer()), "server", "--address", self.address, "--exit-on-eof"]
        if self._with_events:
            args.append("--events")
        self._process = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        ready = _readline(self._process.stdout, self._start_timeout)
        if not ready.startswith("ready"):
            stderr = self._stop_and_collect()
            raise PeerError(f"ttrpc-peer server did not start: {ready!r} {stderr.strip()!r}")
        self.address = ready.split(" ", 1)[1].strip() if " " in ready else self.address
        self._reader = threading.Thread(target=self._read_events, daemon=True)
        self._reader.start()
        return self

    def _read_events(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            with self._changed:
                self.events.append(event)
                self._changed.notify_all()

    def wait_event(self, id_: str, timeout: float = 5.0) -> dict[str, Any]:
        """The first recorded event for request id ``id_``, waiting for it if needed."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for event in self.events:
                    if event.get("id") == id_:
                        return event
                left = deadline - time.monotonic()
                if left <= 0:
                    raise PeerError(f"no event for id {id_!r} within {timeout}s")
                self._changed.wait(left)

    def _stop_and_collect(self) -> str:
        process = self._process
        if process is None:
            return ""
        if process.stdin is not None:
            process.stdin.close()  # --exit-on-eof: the peer shuts down
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        stderr = process.stderr.read() if process.stderr is not None else ""
        if process.stderr is not None:
            process.stderr.close()
        if self._reader is not None:
            self._reader.join(timeout=5)
        if process.stdout is not None:
            process.stdout.close()
        self._process = None
        return stderr

    def stop(self) -> None:
        self._stop_and_collect()

    def __enter__(self) -> GoServer:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> GoServer:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)


def _readline(stream: Any, timeout: float) -> str:
    """One line from a pipe, or "" after ``timeout`` seconds."""
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return line[0] if line else ""


async def run_client(
    address: str,
    scenario: str,
    *,
    calls: int | None = None,
    timeout_ms: int | None = None,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Run ``ttrpc-peer client`` without blocking the event loop; return its JSON object."""
    args = [str(require_peer()), "client", "--address", address, "--scenario", scenario]
    if calls is not None:
        args += ["--calls", str(calls)]
    if timeout_ms is not None:
        args += ["--timeout-ms", str(timeout_ms)]
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise PeerError(f"ttrpc-peer client {scenario} timed out after {timeout}s") from None
    if process.returncode != 0:
        raise PeerError(
            f"ttrpc-peer client {scenario} exited {process.returncode}: {stderr.decode()!r}"
        )
    try:
        result: dict[str, Any] = json.loads(stdout)
    except ValueError as exc:
        raise PeerError(f"ttrpc-peer client {scenario}: not JSON: {stdout[:200]!r}") from exc
    return result
