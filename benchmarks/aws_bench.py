"""Concurrent pod VM creates through the AWS provider against moto_server.

Starts moto_server on loopback, puts the recording EC2 proxy of the test suite in front of
it (optionally injecting RequestLimitExceeded), and runs N ``create_instance`` calls at once
with the client-side rate limiter on. Prints wall time, per-create latency, how much of the
wall time was spent waiting on the endpoint or on the limiter, and CPU time split between
this process (provider, botocore, proxy) and moto_server.

Run from the repository root:

    .venv/bin/python benchmarks/aws_bench.py [--pods 100] [--rate 5] [--throttle 0.0]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from providers.aws.provider import AwsProvider
from providers.aws.settings import AwsSettings
from providers.base import NODE_TAG, SANDBOX_TAG, InstanceRequest
from providers.ratelimit import TokenBucket
from tests.providers.aws.ec2proxy import Ec2Proxy, Fault
from tests.providers.aws.motoserver import REGION, MotoServer

USER_DATA = b"#cloud-config\n" + b"x" * 8192


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def union_seconds(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if stop <= end:
            continue
        total += stop - max(start, end)
        end = stop
    return total


class Meter:
    """Intervals and CPU time gathered while the creates run."""

    def __init__(self) -> None:
        self.endpoint: list[tuple[float, float]] = []
        self.limiter: list[tuple[float, float]] = []
        self.worker_cpu = 0.0
        self._lock = threading.Lock()

    def wrap_bucket(self, bucket: TokenBucket | None) -> None:
        if bucket is None:
            return
        original = bucket.acquire

        async def acquire(tokens: float = 1.0, *, deadline: float | None = None) -> float:
            started = time.perf_counter()
            waited = await original(tokens, deadline=deadline)
            if waited:
                self.limiter.append((started, time.perf_counter()))
            return waited

        bucket.acquire = acquire  # type: ignore[method-assign]

    def wrap_method(self, client: Any, name: str) -> None:
        original: Callable[..., Any] = getattr(client, name)

        def call(**kwargs: Any) -> Any:
            cpu = time.thread_time()
            try:
                return original(**kwargs)
            finally:
                with self._lock:
                    self.worker_cpu += time.thread_time() - cpu

        setattr(client, name, call)


class TimedProxy(Ec2Proxy):
    """The test proxy, also keeping each forwarded call's interval."""

    intervals: list[tuple[float, float]]

    async def _forward(self, request: Any, body: bytes) -> tuple[int, bytes, str]:
        started = time.perf_counter()
        try:
            return await super()._forward(request, body)
        finally:
            self.intervals.append((started, time.perf_counter()))


async def run(args: argparse.Namespace) -> None:
    moto = MotoServer.start(validate=False)
    proxy = TimedProxy(upstream=moto.url, seed=7)
    proxy.intervals = []
    if args.throttle > 0:
        proxy.faults.append(Fault(code="RequestLimitExceeded", status=503, rate=args.throttle))
    await proxy.start()
    loop = asyncio.get_running_loop()
    from concurrent.futures import ThreadPoolExecutor

    loop.set_default_executor(ThreadPoolExecutor(max_workers=args.threads))
    try:
        import boto3

        ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=moto.url,
                           aws_access_key_id="bench", aws_secret_access_key="bench")
        ami = ec2.describe_images(
            Owners=["amazon"], Filters=[{"Name": "name", "Values": ["amzn-ami-hvm-*"]}]
        )["Images"][0]["ImageId"]
        subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
        settings = AwsSettings(
            access_key_id="bench", secret_key="bench", region=REGION, image_id=ami,
            subnet_id=subnet, endpoint_url=proxy.url, imds_url="", api_rate=args.rate,
        )
        provider = AwsProvider(settings, node_name="bench-node")
        meter = Meter()
        client = await provider._ready()
        for name in ("run_instances", "describe_instances", "describe_images",
                     "terminate_instances"):
            meter.wrap_method(client, name)
        meter.wrap_bucket(provider._write_bucket)
        meter.wrap_bucket(provider._read_bucket)

        node = f"bench-{uuid.uuid4().hex[:6]}"
        requests = []
        for _ in range(args.pods):
            sid = uuid.uuid4().hex * 2
            requests.append(InstanceRequest(
                name=f"podvm-bench-{sid[:8]}", sandbox_id=sid, pod_name="bench",
                pod_namespace="default", user_data=USER_DATA,
                tags={NODE_TAG: node, SANDBOX_TAG: sid},
            ))

        latencies: list[float] = []

        async def one(request: InstanceRequest) -> str:
            started = time.perf_counter()
            instance = await provider.create_instance(request)
            latencies.append(time.perf_counter() - started)
            return instance.id

        proxy.intervals.clear()
        moto_cpu0 = proc_cpu_seconds(moto.process.pid)
        main_cpu0 = time.thread_time()
        proc_cpu0 = time.process_time()
        started = time.perf_counter()
        ids = await asyncio.gather(*(one(r) for r in requests))
        wall = time.perf_counter() - started
        main_cpu = time.thread_time() - main_cpu0
        proc_cpu = time.process_time() - proc_cpu0
        moto_cpu = proc_cpu_seconds(moto.process.pid) - moto_cpu0

        endpoint_busy = union_seconds(proxy.intervals)
        limiter_busy = union_seconds(meter.limiter)
        throttled = sum(1 for r in proxy.requests if r.injected)
        calls = len(proxy.intervals)
        quantiles = statistics.quantiles(latencies, n=20)
        print(f"pods={args.pods} rate={args.rate}/s threads={args.threads} "
              f"throttle={args.throttle:.0%} instances={len(set(ids))}")
        print(f"wall time                    {wall:8.2f} s   ({args.pods / wall:.1f} creates/s)")
        print(f"create latency p50/p95/max   {statistics.median(latencies):8.2f} / "
              f"{quantiles[18]:.2f} / {max(latencies):.2f} s")
        print(f"EC2 calls forwarded          {calls:8d}     (+{throttled} throttled answers)")
        print(f"endpoint in flight           {endpoint_busy:8.2f} s   "
              f"({endpoint_busy / wall:.0%} of wall); summed call time "
              f"{sum(b - a for a, b in proxy.intervals):.2f} s")
        print(f"limiter holding a create     {limiter_busy:8.2f} s   ({limiter_busy / wall:.0%} of "
              f"wall); summed waits {sum(b - a for a, b in meter.limiter):.2f} s")
        print(f"CPU moto_server              {moto_cpu:8.2f} s")
        print(f"CPU this process             {proc_cpu:8.2f} s   (event loop thread "
              f"{main_cpu:.2f} s: provider + proxy; boto3 worker threads "
              f"{meter.worker_cpu:.2f} s)")

        cleanup = time.perf_counter()
        await asyncio.gather(*(provider.delete_instance(i) for i in ids))
        print(f"delete all (concurrently)    {time.perf_counter() - cleanup:8.2f} s")
        await provider.aclose()
    finally:
        await proxy.aclose()
        moto.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--rate", type=float, default=5.0, help="AWS_API_RATE")
    parser.add_argument("--throttle", type=float, default=0.0,
                        help="share of calls answered RequestLimitExceeded")
    parser.add_argument("--threads", type=int, default=min(32, (os.cpu_count() or 1) + 4),
                        help="default executor size (asyncio.to_thread)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
