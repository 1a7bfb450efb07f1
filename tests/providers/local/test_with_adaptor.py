"""The quick start for real: cloud-api-adaptor with the local provider, driven by peerpodctl."""

from __future__ import annotations

import asyncio
import io
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adaptor import ctl
from providers.local.layout import poll_until


def _read(path: Path) -> str:
    return path.read_text(errors="replace")


def _vm_dirs(state: Path) -> list[Path]:
    return list(state.iterdir()) if state.exists() else []


@pytest.fixture
async def adaptor_env() -> AsyncIterator[dict[str, str]]:
    root = Path(tempfile.mkdtemp(prefix="ppa-"))
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "REMOTE_HYPERVISOR_ENDPOINT": str(root / "hv.sock"),
        "PODS_DIR": str(root / "pods"),
        "TUNNEL_TYPE": "none",
        "LOCAL_NETNS": "off",
        "LOCAL_STATE_DIR": str(root / "local"),
        "LOCAL_LOOPBACK_SUBNET": f"127.{secrets.randbelow(250) + 1}.{secrets.randbelow(250) + 1}"
                                 ".0/24",
        "PROBE_PORT": str(20000 + secrets.randbelow(20000)),
    }
    log = open(root / "adaptor.log", "wb")  # noqa: ASYNC230 (test setup, tiny)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "adaptor", "local", env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        socket_path = Path(env["REMOTE_HYPERVISOR_ENDPOINT"])
        assert await poll_until(socket_path.exists, 30), _read(root / "adaptor.log")
        yield env
    finally:
        proc.terminate()
        async with asyncio.timeout(30):
            await proc.wait()
        log.close()
        shutil.rmtree(root, ignore_errors=True)


async def test_demo_through_the_real_adaptor(adaptor_env: dict[str, str]) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = await ctl.run(["--json", "demo", "--timeout", "120"], env=adaptor_env, out=out,
                         err=err)
    result = json.loads(out.getvalue())
    assert code == 0, (result, err.getvalue())
    assert [(s["step"], s["ok"]) for s in result["steps"]] == [
        ("create", True), ("start", True), ("check", True), ("stop", True)]
    # StopVM deleted the pod VM: no VM directory is left in the provider's state dir.
    assert _vm_dirs(Path(adaptor_env["LOCAL_STATE_DIR"])) == []
