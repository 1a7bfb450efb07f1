"""The real ``cloud-api-adaptor`` as a subprocess, against the loopback fake cloud.

:class:`AdaptorProcess` starts ``python -m tests.fakes.run_adaptor fakecloud`` with its
settings in the environment, waits for ``/startup``, kills or signals it, and scans its log
for secrets (``tests.fakes.leakcheck``) when it is done.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp

from tests.fakes import leakcheck
from tests.fakes.cloud import free_port

REPO = str(Path(__file__).resolve().parents[2])
CLOUD_TOKEN = "fakecloud-token-7f3c9a1e"  # a secret setting: must never reach a log line
leakcheck.add_secret(CLOUD_TOKEN)


class AdaptorProcess:
    _count = 0

    def __init__(
        self, root: str, cloud_url: str, forwarder_port: int, *,
        node: str = "node-1", env: dict[str, str] | None = None,
    ) -> None:
        AdaptorProcess._count += 1
        self.name = f"adaptor-{AdaptorProcess._count}"
        self.root = root
        self.probe_port = free_port()
        self.log_path = os.path.join(root, f"{self.name}.log")
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": REPO,
            "REMOTE_HYPERVISOR_ENDPOINT": os.path.join(root, "hv.sock"),
            "PODS_DIR": os.path.join(root, "pods"),
            "TUNNEL_TYPE": "fake",
            "FORWARDER_PORT": str(forwarder_port),
            "FAKECLOUD_URL": cloud_url,
            "FAKECLOUD_TOKEN": CLOUD_TOKEN,
            "NODE_NAME": node,
            "PROBE_PORT": str(self.probe_port),
            "PROXY_TIMEOUT": "10s",
            "LOG_LEVEL": "debug",
            "SHUTDOWN_GRACE_PERIOD": "5s",
            **(env or {}),
        }
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def socket(self) -> str:
        return self.env["REMOTE_HYPERVISOR_ENDPOINT"]

    @property
    def pods_dir(self) -> str:
        return self.env["PODS_DIR"]

    async def start(self, *, wait: bool = True) -> None:
        with open(self.log_path, "ab") as log:  # noqa: ASYNC230 - tiny, test setup
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.fakes.run_adaptor", "fakecloud",
                cwd=REPO, env=self.env, stdout=log, stderr=log,
            )
        if wait:
            await self.wait_started()

    async def probe(self, path: str) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.probe_port}{path}"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return response.status, await response.text()

    async def wait_started(self, timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            while True:
                if self.proc is not None and self.proc.returncode is not None:
                    raise AssertionError(f"{self.name} exited: {self.log()[-3000:]}")
                try:
                    status, _ = await self.probe("/startup")
                except aiohttp.ClientError:
                    status = 0
                if status == 200:
                    return
                await asyncio.sleep(0.05)

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    async def kill(self) -> None:
        self.signal(signal.SIGKILL)
        await self.wait()

    async def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        async with asyncio.timeout(timeout):
            return await self.proc.wait()

    def log(self) -> str:
        return Path(self.log_path).read_text(errors="replace")

    async def aclose(self) -> None:
        """Stop it if it still runs (SIGKILL: the test decides on graceful stops), then scan
        its log for secrets."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if os.path.exists(self.log_path):  # noqa: ASYNC240
            leaks = leakcheck.scan_log_file(self.log_path, self.name)
            assert not leaks, leaks
