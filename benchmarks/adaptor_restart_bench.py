"""cloud-api-adaptor restart with running pods, and its memory.

    .venv/bin/python benchmarks/adaptor_restart_bench.py [--pods 100]

Runs the real daemon as a subprocess (``tests.fakes.run_adaptor``) against the loopback fake
cloud, whose pod VMs (test forwarder with mutual TLS + test agent on 127.0.0.N) live in this
process and survive the daemon.
1. Idle RSS (from /proc/<pid>/status) once /startup answers. Target: <= 60 MiB. Measured
   twice: for the test daemon above (its fake-cloud provider adds an HTTP client library),
   and for the shipped daemon, ``cloud-api-adaptor local`` with the default VXLAN tunnel.
2. N pods created and started; RSS with N sandboxes. Target (N=100): <= 100 MiB.
3. SIGKILL, start again: time from process start until every agent socket answers a
   grpc.Health/Check again (through the proxy and the forwarder). Target: <= 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.adaptor.agentclient import ReconnectingAgentClient
from tests.adaptor.daemonproc import AdaptorProcess
from tests.adaptor.shim import Shim, shim_annotations
from tests.fakes.cloudapi import CloudAPI


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def shipped_idle_rss() -> float:
    """Idle RSS of the shipped ``cloud-api-adaptor local`` (loopback VMs, VXLAN tunnel)."""
    root = tempfile.mkdtemp(prefix="ppi", dir="/tmp")
    env = {
        **os.environ, "REMOTE_HYPERVISOR_ENDPOINT": f"{root}/hv.sock",
        "PODS_DIR": f"{root}/pods", "LOCAL_STATE_DIR": f"{root}/local", "PROBE_PORT": "0",
        "LOCAL_NETNS": "off", "TUNNEL_TYPE": "vxlan",
    }
    exe = os.path.join(os.path.dirname(sys.executable), "cloud-api-adaptor")
    proc = await asyncio.create_subprocess_exec(
        exe, "local", env=env, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        socket_path = Path(root, "hv.sock")
        for _ in range(100):
            if await asyncio.to_thread(socket_path.exists):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        return rss_mib(proc.pid)
    finally:
        proc.terminate()
        await proc.wait()
        shutil.rmtree(root, ignore_errors=True)


async def run(pods: int) -> None:
    root = tempfile.mkdtemp(prefix="ppb", dir="/tmp")
    api = CloudAPI(root)
    await api.start()
    env = {"LOG_LEVEL": "info"}
    first = AdaptorProcess(root, api.url, api.cloud.port, env=env)
    try:
        await first.start()
        assert first.proc is not None
        await asyncio.sleep(0.5)
        idle = rss_mib(first.proc.pid)
        shim = Shim(first.socket)
        sids = [f"sb-{n:03d}" for n in range(pods)]
        sem = asyncio.Semaphore(20)

        async def create_and_start(sid: str) -> str:
            async with sem:
                path = await shim.create_vm(sid, shim_annotations(pod=f"pod-{sid}"))
                await shim.start_vm(sid)
                return path

        paths = await asyncio.gather(*(create_and_start(s) for s in sids))
        clients = [ReconnectingAgentClient(p) for p in paths]
        await asyncio.gather(*(c.check() for c in clients))
        await asyncio.sleep(0.5)
        loaded = rss_mib(first.proc.pid)
        await first.kill()

        second = AdaptorProcess(root, api.url, api.cloud.port, env=env)
        began = time.monotonic()
        await second.start(wait=False)
        await asyncio.gather(*(c.check(timeout=60) for c in clients))
        restart = time.monotonic() - began
        await second.wait_started()
        assert second.proc is not None
        restored = rss_mib(second.proc.pid)
        for client in clients:
            await client.aclose()
        shipped = await shipped_idle_rss()
        print(f"idle RSS (test daemon):           {idle:7.1f} MiB")
        print(f"idle RSS (cloud-api-adaptor local): {shipped:5.1f} MiB   (target <= 60 MiB)")
        print(f"RSS with {pods} sandboxes:          {loaded:7.1f} MiB   (target <= 100 MiB)")
        print(f"RSS after restart, {pods} restored: {restored:7.1f} MiB")
        print(f"restart until all {pods} proxies serve: {restart * 1000:7.0f} ms"
              f"   (target <= 2000 ms)")
        await second.aclose()
    finally:
        await first.aclose()
        await api.aclose()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=100)
    args = parser.parse_args()
    asyncio.run(run(args.pods))


if __name__ == "__main__":
    main()
