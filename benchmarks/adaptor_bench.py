"""cloud-api-adaptor overhead, measured through its real unix sockets.

    .venv/bin/python benchmarks/adaptor_bench.py [--pods 200] [--concurrent 100] [--calls 2000]

1. Per pod: CreateVM + StartVM + StopVM, one pod at a time, with a zero-latency in-memory
   provider whose "VM" is a test forwarder (mutual TLS) and test agent on 127.0.0.N.
   Booting and halting that fake VM is cloud time, not adaptor time: it is timed apart and
   subtracted for the "adaptor only" line. Target: p50 <= 20 ms.
2. N pods started concurrently (CreateVM + StartVM each on its own connections): wall time.
3. grpc.Health/Check round trip over one long-lived connection: straight to the agent,
   to the forwarder (TLS, what the proxy itself dials) and through the adaptor's proxy.
   Target: proxy p50 <= 1.5 x direct.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import timedelta

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from adaptor.config import AdaptorSettings
from adaptor.manager import RetryPolicy
from adaptor.server import Daemon
from adaptor.tls import AgentTLS
from protocols.kata import health_pb2
from protocols.ttrpc import Client
from providers.base import Instance, InstanceRequest
from tests.adaptor.shim import Shim
from tests.fakes.cloud import FakeCloud
from tests.fakes.network import FakeWorkerNetwork


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


class TimedCloud(FakeCloud):
    """Records how long the fake VM boot/halt (the provider's share) takes."""

    def __init__(self, workdir: str) -> None:
        super().__init__(workdir)
        self.vm_time: dict[str, float] = {}
        self.provider.on_create = self._timed_boot
        self.provider.on_delete = self._timed_halt

    async def _timed_boot(self, request: InstanceRequest, instance: Instance) -> None:
        started = time.perf_counter()
        await self._boot(request, instance)
        self.vm_time[request.sandbox_id] = time.perf_counter() - started

    async def _timed_halt(self, request: InstanceRequest, instance: Instance) -> None:
        started = time.perf_counter()
        await self._halt(request, instance)
        self.vm_time[request.sandbox_id] += time.perf_counter() - started


async def check_loop(client: Client, calls: int) -> list[float]:
    out = []
    request = health_pb2.CheckRequest()
    for _ in range(calls):
        started = time.perf_counter()
        await client.call("grpc.Health", "Check", request, health_pb2.HealthCheckResponse,
                          timeout=30)
        out.append(time.perf_counter() - started)
    return out


async def bench(pods: int, concurrent: int, calls: int) -> None:
    workdir = tempfile.mkdtemp(prefix="ppb", dir="/tmp")
    cloud = TimedCloud(workdir)
    settings = AdaptorSettings(
        socket=f"{workdir}/hv.sock", pods_dir=f"{workdir}/p", forwarder_port=cloud.port,
        proxy_timeout=timedelta(seconds=10), tunnel_type="none", node_name="bench",
    )
    daemon = Daemon(settings, cloud.provider, network=FakeWorkerNetwork(),
                    delete_retry=RetryPolicy(attempts=2, initial_delay=0.01))
    await daemon.start()
    shim = Shim(settings.socket)
    try:
        # 1. sequential lifecycle
        totals, adaptor_only = [], []
        for i in range(pods):
            sid = f"{i:08x}" + "0" * 56
            started = time.perf_counter()
            await shim.create_vm(sid)
            await shim.start_vm(sid)
            await shim.stop_vm(sid)
            total = time.perf_counter() - started
            totals.append(total)
            adaptor_only.append(total - cloud.vm_time.pop(sid))
        print(f"per pod, CreateVM+StartVM+StopVM, {pods} pods one at a time (mTLS):")
        print(f"  total         p50 {ms(pct(totals, 50))}  p99 {ms(pct(totals, 99))}")
        print(f"  adaptor only  p50 {ms(pct(adaptor_only, 50))}  "
              f"p99 {ms(pct(adaptor_only, 99))}   (fake VM boot/halt subtracted; "
              "target p50 <= 20 ms)")

        # 2. concurrent starts
        sids = [f"c{i:07x}" + "0" * 56 for i in range(concurrent)]

        async def up(sid: str) -> None:
            await shim.create_vm(sid)
            await shim.start_vm(sid)

        started = time.perf_counter()
        await asyncio.gather(*(up(s) for s in sids))
        wall = time.perf_counter() - started
        print(f"{concurrent} pods started concurrently: {wall:.2f} s wall "
              f"({len(cloud.provider.instances)} instances)")
        started = time.perf_counter()
        await asyncio.gather(*(shim.stop_vm(s) for s in sids))
        print(f"{concurrent} pods stopped concurrently: {time.perf_counter() - started:.2f} s")

        # 3. Check round trips
        sid = "a" * 64
        path = await shim.create_vm(sid)
        await shim.start_vm(sid)
        agent = cloud.agents[sid]
        forwarder = cloud.forwarders[sid]
        assert daemon.manager is not None
        record = daemon.manager.record(sid)
        assert record is not None
        results: dict[str, list[float]] = {}
        async with await Client.connect_unix(agent.socket_path) as direct:
            await check_loop(direct, 100)
            results["direct to agent (unix)"] = await check_loop(direct, calls)
        tls: AgentTLS = daemon._prepared.tls  # the adaptor's own client identity
        async with await Client.connect_tcp(
            forwarder.host, forwarder.port, ssl=tls.client_context(),
            server_hostname=record.server_name,
        ) as fwd:
            await check_loop(fwd, 100)
            results["to forwarder (mTLS TCP)"] = await check_loop(fwd, calls)
        async with await Client.connect_unix(path) as proxied:
            await check_loop(proxied, 100)
            results["through the proxy"] = await check_loop(proxied, calls)
        base = statistics.median(results["direct to agent (unix)"])
        print(f"grpc.Health/Check round trip, {calls} calls each:")
        for name, values in results.items():
            p50 = statistics.median(values)
            print(f"  {name:26s} p50 {ms(p50)}  p99 {ms(pct(values, 99))}  "
                  f"({p50 / base:.2f}x direct)")
        await shim.stop_vm(sid)
    finally:
        await daemon.aclose()
        await cloud.aclose()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=200)
    parser.add_argument("--concurrent", type=int, default=100)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(bench(args.pods, args.concurrent, args.calls))


if __name__ == "__main__":
    main()
