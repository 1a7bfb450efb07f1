"""The loopback KBS (tests/guest/kbs_server.py) as a process on one address of a network
namespace the test made, so that a pod VM on the test's libvirt network can reach it.

``python -m tests.podvm_image.kbsproc ADDRESS RESOURCES.json LOG`` serves Trustee's KBS
protocol with the allow-all resource policy (the pod VM attests with the sample attester),
the resources of RESOURCES.json (``{"default/key/name": "<hex>"}``), prints its URL on stdout
once it listens, and appends one JSON line per resource request to LOG:
``{"path": "default/key/name", "status": 200}``. It stops on SIGTERM.
:class:`KbsInNetns` starts and stops it from a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

from aiohttp import web

from tests.guest.kbs_server import ALLOW_ALL, KbsState, LoopbackKbs

REPO = Path(__file__).resolve().parents[2]


class LoggingKbs(LoopbackKbs):
    """The loopback KBS, writing down every resource request and its answer."""

    def __init__(self, state: KbsState, log_path: Path) -> None:
        super().__init__(state)
        self.log_path = log_path

    async def api(self, request: web.Request) -> web.StreamResponse:
        response = await super().api(request)
        path = request.match_info["path"]
        if path.startswith("resource/") and request.method == "GET":
            entry = {"path": path.removeprefix("resource/"), "status": response.status}
            with self.log_path.open("a") as log:
                log.write(json.dumps(entry) + "\n")
        return response


async def serve(address: str, resources: Mapping[str, bytes], log_path: Path) -> None:
    kbs = LoggingKbs(KbsState(policy=ALLOW_ALL, resources=dict(resources)), log_path)
    runner = web.AppRunner(kbs.app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, address, 0)
        await site.start()
        port = runner.addresses[0][1]
        print(f"http://{address}:{port}", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


class KbsInNetns:
    """The KBS process in ``netns`` on ``address``: ``url`` once :meth:`start` returned."""

    def __init__(self, netns: str, address: str, resources: Mapping[str, bytes],
                 workdir: Path) -> None:
        self.netns = netns
        self.address = address
        self.resources = dict(resources)
        self.workdir = workdir
        self.log_path = workdir / "kbs-requests.jsonl"
        self.url = ""
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self, timeout: float = 30.0) -> str:
        spec = self.workdir / "kbs-resources.json"
        spec.write_text(json.dumps({k: v.hex() for k, v in self.resources.items()}))
        spec.chmod(0o600)
        self._proc = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", self.netns, sys.executable, "-m", "tests.podvm_image.kbsproc",
            self.address, str(spec), str(self.log_path),
            cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(REPO)},
        )
        assert self._proc.stdout is not None
        async with asyncio.timeout(timeout):
            line = (await self._proc.stdout.readline()).decode().strip()
        if not line.startswith("http://"):
            rest = await self._proc.stdout.read()
            raise AssertionError(f"the KBS did not start: {line}\n{rest.decode()[-2000:]}")
        self.url = line
        return line

    def requests(self) -> list[dict[str, object]]:
        """The resource requests so far: ``{"path", "status"}``."""
        try:
            text = self.log_path.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines()]

    async def aclose(self) -> None:
        if self._proc is None or self._proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self._proc.terminate()
        try:
            async with asyncio.timeout(10):
                await self._proc.wait()
        except TimeoutError:
            self._proc.kill()
            await self._proc.wait()


def main(argv: list[str]) -> int:
    address, spec, log_path = argv
    resources = {k: bytes.fromhex(v) for k, v in json.loads(Path(spec).read_text()).items()}
    asyncio.run(serve(address, resources, Path(log_path)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
