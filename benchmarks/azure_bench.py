"""100 pod VM creates at once through the Azure provider, against the loopback ARM endpoint.

The ARM endpoint (tests/providers/azure/armserver.py) runs in a process of its own on
127.0.0.1 with an injected latency per long-running operation (``--lro``, default 3 s: a VM
create or delete "takes" that long, answered with ``retry-after-ms`` polls as ARM does). The
benchmark process runs the real provider (azure-identity, azure-mgmt-compute/network, the
client-side rate limiter at its default ``AZURE_API_RATE`` and the retry loop) and creates
``--vms`` VMs at once, then deletes them all at once.

The adaptor's own share: per create, its latency minus the injected operation latency is
the time spent in the provider, the SDK, the loopback HTTP and the fake's handlers. The
benchmark process's CPU seconds (provider + SDK) are reported next to the fake's.

    .venv/bin/python benchmarks/azure_bench.py [--vms 100] [--lro 3.0] [--poll-ms 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from providers.azure.provider import AzureProvider
from providers.azure.settings import AzureSettings
from providers.base import InstanceRequest, adaptor_tags


async def serve(out: Path, lro: float, poll_ms: int) -> None:
    from tests.providers.azure.armserver import ArmServer
    from tests.providers.azure.conftest import managed_image, new_state

    state = new_state("10.8.0.0/16")
    state.faults.operation_polls = 0
    state.faults.operation_seconds = lro
    state.faults.poll_after_ms = poll_ms
    state.page_size = 1000
    server = await ArmServer(state).start()
    world = {
        "url": server.url, "ca": server.ca_file, "sub": state.subscription,
        "rg": state.resource_group, "region": state.region, "tenant": state.tenant,
        "client_id": state.client_id, "secret": state.client_secret,
        "image": managed_image(state),
        "subnet": state.resource_id("Microsoft.Network", "virtualNetworks", "vnet-1")
        + "/subnets/pods",
    }
    (out / "world.tmp").write_text(json.dumps(world))
    (out / "world.tmp").rename(out / "world.json")
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    (out / "requests.json").write_text(json.dumps(len(server.seen)))
    await server.aclose()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def start_server(out: Path, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, __file__, "--serve", str(out), "--lro",
                             str(args.lro), "--poll-ms", str(args.poll_ms)])


async def bench(args: argparse.Namespace) -> None:
    out = Path(tempfile.mkdtemp(prefix="azbench"))
    proc = start_server(out, args)
    try:
        deadline = time.monotonic() + 30
        while not (out / "world.json").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the ARM endpoint did not start")
            await asyncio.sleep(0.05)
        w = json.loads((out / "world.json").read_text())
        settings = AzureSettings(
            client_id=w["client_id"], client_secret=w["secret"], tenant_id=w["tenant"],
            subscription_id=w["sub"], region=w["region"], resource_group=w["rg"],
            subnet_id=w["subnet"], image_id=w["image"], arm_endpoint=w["url"],
            authority_host=w["url"])
        provider = AzureProvider(settings, node_name="bench", connection_verify=w["ca"])
        await provider.list_instances({})  # token, clients, SSH key: not part of a create
        await provider._public_key()
        cpu0, t0 = time.process_time(), time.monotonic()
        latencies: list[float] = []

        async def one(n: int) -> str:
            sid = uuid.uuid4().hex * 2
            start = time.monotonic()
            instance = await provider.create_instance(InstanceRequest(
                name=f"podvm-bench-{n}-{sid[:8]}", sandbox_id=sid, pod_name=f"bench-{n}",
                pod_namespace="default", user_data=b"#cloud-config\n" + os.urandom(6000),
                tags=adaptor_tags("bench", sid, f"bench-{n}", "default")))
            latencies.append(time.monotonic() - start)
            return instance.id

        ids = await asyncio.gather(*(one(n) for n in range(args.vms)))
        wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
        t1 = time.monotonic()
        await asyncio.gather(*(provider.delete_instance(i) for i in ids))
        delete_wall = time.monotonic() - t1
        left = await provider.list_instances({})
        await provider.aclose()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    server_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    requests = json.loads((out / "requests.json").read_text())
    overhead = [lat - args.lro for lat in latencies]
    print(f"{args.vms} creates at once, {args.lro:.1f} s injected per long-running operation, "
          f"polls every {args.poll_ms} ms")
    print(f"  wall {wall:.2f} s (ideal {args.lro:.2f} s); deletes at once {delete_wall:.2f} s;"
          f" left after delete: {len(left)}")
    print(f"  create latency p50 {pct(latencies, .5):.2f} s p90 {pct(latencies, .9):.2f} s "
          f"max {max(latencies):.2f} s")
    print(f"  beyond the injected latency (provider + SDK + loopback + fake): "
          f"p50 {pct(overhead, .5):.2f} s p90 {pct(overhead, .9):.2f} s "
          f"mean {statistics.mean(overhead):.2f} s")
    print(f"  provider process CPU {cpu:.2f} s ({cpu / args.vms * 1000:.1f} ms per create); "
          f"fake ARM CPU {server_cpu.ru_utime + server_cpu.ru_stime:.2f} s; "
          f"{requests} ARM requests")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vms", type=int, default=100)
    parser.add_argument("--lro", type=float, default=3.0)
    parser.add_argument("--poll-ms", type=int, default=500)
    parser.add_argument("--serve", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(Path(args.serve), args.lro, args.poll_ms))
    else:
        asyncio.run(bench(args))


if __name__ == "__main__":
    main()
