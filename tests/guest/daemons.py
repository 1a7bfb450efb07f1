"""Run the three guest daemons as processes, with upstream's flags."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait_until(
    check: object, what: str, proc: asyncio.subprocess.Process, deadline: float = 20.0
) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.returncode is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        if await check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.02)  # polling a condition with a deadline, not synchronising
    raise TimeoutError(f"{what} did not come up")


async def _socket_ready(path: Path) -> bool:
    try:
        _, writer = await asyncio.open_unix_connection(str(path))
    except OSError:
        return False
    writer.close()
    return True


async def _port_ready(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True


@dataclass
class Daemons:
    aa_socket: Path
    cdh_socket: Path
    port: int
    procs: list[asyncio.subprocess.Process]


def _open_log(log: Path) -> int:
    return os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)


async def _spawn(args: Sequence[str], log: Path) -> asyncio.subprocess.Process:
    out = _open_log(log)
    try:
        return await asyncio.create_subprocess_exec(
            *args, stdout=out, stderr=out, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
    finally:
        os.close(out)


@contextlib.asynccontextmanager
async def run_daemons(
    workdir: Path, aa_toml: Path, cdh_toml: Path, cdh_socket: Path, port: int
) -> AsyncIterator[Daemons]:
    aa_socket = workdir / "aa.sock"
    procs: list[asyncio.subprocess.Process] = []
    try:
        aa = await _spawn(
            [str(BIN / "attestation-agent"), "-c", str(aa_toml), "-a", f"unix://{aa_socket}"],
            workdir / "aa.log",
        )
        procs.append(aa)
        await _wait_until(lambda: _socket_ready(aa_socket), "attestation-agent", aa)
        cdh = await _spawn(
            [str(BIN / "confidential-data-hub"), "-c", str(cdh_toml)], workdir / "cdh.log"
        )
        procs.append(cdh)
        await _wait_until(lambda: _socket_ready(cdh_socket), "confidential-data-hub", cdh)
        api = await _spawn(
            [
                str(BIN / "api-server-rest"),
                "--features",
                "all",
                "-b",
                f"127.0.0.1:{port}",
                "-a",
                f"unix://{aa_socket}",
                "-c",
                f"unix://{cdh_socket}",
            ],
            workdir / "api.log",
        )
        procs.append(api)
        await _wait_until(lambda: _port_ready(port), "api-server-rest", api)
        yield Daemons(aa_socket, cdh_socket, port, procs)
    finally:
        for proc in reversed(procs):
            if proc.returncode is None:
                proc.terminate()
        for proc in procs:
            await proc.wait()
