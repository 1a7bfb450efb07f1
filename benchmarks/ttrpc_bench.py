"""Unary ttrpc round trip: grpc.Health/Check, sequential calls over a unix socket.

    .venv/bin/python benchmarks/ttrpc_bench.py [--calls 20000]

Rows: Python client -> Python server, Go client -> Python server, Go client -> Go server,
Python client -> Go server. Each server runs in its own process; the Go side is containerd's
ttrpc (tests/interop/go/bin/ttrpc-peer, built by .ci/setup.d/20-go-interop.sh). Prints p50
and p99 latency in microseconds, calls per second, and the ratio of the Python server's p50
to the Go server's p50 with the same (Go) client; the target is at most 2.
With --profile, the Python server runs under cProfile and prints its top functions.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from protocols.kata import health_pb2
from protocols.ttrpc import CallContext, Client, Method, Server
from runtime import aio

PEER = Path(__file__).resolve().parent.parent / "tests" / "interop" / "go" / "bin" / "ttrpc-peer"


async def _check(
    request: health_pb2.CheckRequest, ctx: CallContext
) -> health_pb2.HealthCheckResponse:
    return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


async def serve(path: str) -> None:
    """Child mode: a Python ttrpc server with grpc.Health/Check until SIGTERM."""
    server = Server()
    server.register(
        "grpc.Health/Check", Method(_check, health_pb2.CheckRequest, health_pb2.HealthCheckResponse)
    )
    await server.start_unix(path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await server.shutdown(grace=1.0)


def serve_profiled(path: str) -> None:
    profile = cProfile.Profile()
    profile.enable()
    try:
        aio.run(serve(path))
    finally:
        profile.disable()
        stats = pstats.Stats(profile, stream=sys.stderr)
        stats.sort_stats("tottime").print_stats(25)


def start(args: list[str]) -> subprocess.Popen[str]:
    process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("ready"):
        process.kill()
        raise SystemExit(f"server did not start: {args} -> {line!r}")
    return process


def stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def python_client(path: str, calls: int) -> dict[str, float]:
    request = health_pb2.CheckRequest()
    async with await Client.connect_unix(path) as client:
        for _ in range(calls // 20 + 10):
            await client.call("grpc.Health", "Check", request, health_pb2.HealthCheckResponse)
        samples = []
        started = time.perf_counter()
        for _ in range(calls):
            t = time.perf_counter()
            await client.call(
                "grpc.Health", "Check", request, health_pb2.HealthCheckResponse, timeout=None
            )
            samples.append(time.perf_counter() - t)
        total = time.perf_counter() - started
    samples.sort()
    return {
        "p50_us": samples[calls // 2] * 1e6,
        "p99_us": samples[calls * 99 // 100] * 1e6,
        "calls_per_s": calls / total,
    }


def go_client(path: str, calls: int) -> dict[str, float]:
    out = subprocess.run(
        [str(PEER), "client", "--address", f"unix:{path}", "--scenario", "bench",
         "--calls", str(calls)],
        check=True, capture_output=True, text=True, timeout=600,
    ).stdout
    result: dict[str, float] = json.loads(out)
    if "error" in result:
        raise SystemExit(f"go client failed: {result}")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description="ttrpc unary round-trip benchmark")
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--profile", action="store_true", help="cProfile the Python server")
    parser.add_argument("--serve", metavar="PATH", help=argparse.SUPPRESS)
    parser.add_argument("--serve-profiled", metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        aio.run(serve(args.serve))
        return 0
    if args.serve_profiled:
        serve_profiled(args.serve_profiled)
        return 0
    if not PEER.is_file():
        raise SystemExit(f"{PEER} is missing: run bash .ci/setup.d/20-go-interop.sh")

    rows: list[tuple[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory(prefix="ttrpc-bench-") as tmp:
        py_sock, go_sock = f"{tmp}/py.sock", f"{tmp}/go.sock"
        mode = "--serve-profiled" if args.profile else "--serve"
        py_server = start([sys.executable, __file__, mode, py_sock])
        go_server = start([str(PEER), "bench-server", "--address", f"unix:{go_sock}"])
        try:
            rows.append(("python client -> python server",
                         aio.run(python_client(py_sock, args.calls))))
            rows.append(("go client     -> python server", go_client(py_sock, args.calls)))
            rows.append(("go client     -> go server", go_client(go_sock, args.calls)))
            rows.append(("python client -> go server",
                         aio.run(python_client(go_sock, args.calls))))
        finally:
            stop(py_server)
            stop(go_server)

    loop = os.environ.get("PEERPODS_EVENT_LOOP", "uvloop")
    print(f"grpc.Health/Check, {args.calls} sequential calls per row, unix socket, "
          f"Python on the daemons' event loop ({loop}; PEERPODS_EVENT_LOOP=asyncio|uvloop)")
    print(f"{'path':32} {'p50 us':>9} {'p99 us':>9} {'calls/s':>10}")
    for name, r in rows:
        print(f"{name:32} {r['p50_us']:9.1f} {r['p99_us']:9.1f} {r['calls_per_s']:10.0f}")
    ratio = rows[1][1]["p50_us"] / rows[2][1]["p50_us"]
    verdict = "within" if ratio <= 2.0 else "OVER"
    print(f"python server p50 / go server p50 (go client): {ratio:.2f} ({verdict} the 2x target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
