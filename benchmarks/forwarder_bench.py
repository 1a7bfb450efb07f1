"""Health/Check round trip through agent-protocol-forwarder (mutual TLS) vs. direct to the agent.

Three processes, as in a pod VM: a fake kata-agent on a unix socket, the real
``agent-protocol-forwarder`` console script, and this client. Prints p50/p99 latency of
sequential calls on one connection for both paths, their ratio, and the throughput of
``--concurrency`` calls in flight at once through the forwarder.

    .venv/bin/python benchmarks/forwarder_bench.py [--count 3000] [--concurrency 50]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root

from protocols.kata import health_pb2
from protocols.ttrpc import Client
from runtime.tlsprofile import client_context
from tests.forwarder.apf.helpers import SERVER_NAME, FakeAgent, make_pki


def _agent_main(path: str) -> None:
    async def run() -> None:
        await FakeAgent(path).start()
        await asyncio.Event().wait()

    asyncio.run(run())


def _forwarder_command() -> list[str]:
    script = shutil.which("agent-protocol-forwarder", path=os.path.dirname(sys.executable))
    return [script] if script else [sys.executable, "-m", "forwarder.apf_main"]


async def _connect_agent(path: str) -> Client:
    for _ in range(500):
        try:
            return await Client.connect_unix(path)
        except OSError:
            await asyncio.sleep(0.01)
    return await Client.connect_unix(path)


async def _round_trips(client: Client, count: int) -> list[float]:
    request = health_pb2.CheckRequest()
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        await client.call("grpc.Health", "Check", request, health_pb2.HealthCheckResponse,
                          timeout=30)
        samples.append(time.perf_counter() - start)
    return samples


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e6


async def _throughput(client: Client, total: int, concurrency: int) -> float:
    request = health_pb2.CheckRequest()
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await client.call("grpc.Health", "Check", request, health_pb2.HealthCheckResponse,
                              timeout=30)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - start)


async def bench(count: int, warmup: int, concurrency: int) -> None:
    pki = make_pki()
    with tempfile.TemporaryDirectory(prefix="apf-bench-") as tmp:
        agent_path = str(Path(tmp) / "agent.sock")
        agent = multiprocessing.get_context("spawn").Process(
            target=_agent_main, args=(agent_path,), daemon=True)
        agent.start()
        config = Path(tmp) / "apf.json"
        config.write_text(pki.apf_json())
        notify_path = str(Path(tmp) / "notify.sock")
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(notify_path)
        notify.setblocking(False)
        env = dict(os.environ, NOTIFY_SOCKET=notify_path)
        forwarder = await asyncio.create_subprocess_exec(
            *_forwarder_command(), "-config", str(config), "-listen", "127.0.0.1:0",
            "-kata-agent-socket", agent_path, env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        try:
            ready = (await asyncio.wait_for(
                asyncio.get_running_loop().sock_recv(notify, 4096), 30)).decode()
            port = int(ready.rsplit(":", 1)[1])
            direct = await _connect_agent(agent_path)
            context = client_context(pki.client.cert_pem, pki.client.key_pem, pki.ca.cert_pem)
            relayed = await Client.connect_tcp("127.0.0.1", port, ssl=context,
                                               server_hostname=SERVER_NAME)
            await _round_trips(direct, warmup)
            await _round_trips(relayed, warmup)
            d = await _round_trips(direct, count)
            r = await _round_trips(relayed, count)
            rate = await _throughput(relayed, count, concurrency)
            await direct.aclose()
            await relayed.aclose()
        finally:
            forwarder.terminate()
            await forwarder.wait()
            agent.terminate()
            agent.join()
            notify.close()

    print(f"grpc.Health/Check, {count} sequential calls on one connection each "
          f"(warm-up {warmup}); python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    print(f"{'path':<34}{'p50 us':>10}{'p99 us':>10}{'mean us':>10}")
    for name, samples in (("direct to agent (unix)", d),
                          ("via forwarder (TCP + mTLS)", r)):
        print(f"{name:<34}{_pct(samples, 0.5):>10.0f}{_pct(samples, 0.99):>10.0f}"
              f"{statistics.fmean(samples) * 1e6:>10.0f}")
    print(f"ratio forwarder/direct: p50 {_pct(r, 0.5) / _pct(d, 0.5):.2f}x, "
          f"p99 {_pct(r, 0.99) / _pct(d, 0.99):.2f}x")
    print(f"throughput via forwarder with {concurrency} calls in flight: {rate:.0f} calls/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(bench(args.count, args.warmup, args.concurrency))


if __name__ == "__main__":
    main()
