"""100 pods created at once through the whole adaptor on the AWS provider, against moto_server.

Needs root: everything runs in a fresh network namespace (tests/providers/aws/nsworld.py),
because moto's instance addresses are private ones that must not be dialled from the
machine's namespace. In it: moto_server; the stand-in pod VMs (tests/providers/aws/fleet.py:
a mutual-TLS test forwarder on each instance's private IP as soon as moto lists the
instance), which also serve a recording EC2 proxy in front of moto; and
``cloud-api-adaptor aws`` (with the default AWS_API_RATE unless --rate is given), started
through tests/providers/aws/timed_adaptor.py, which only times the rate limiter's waits. Each
pod is CreateVM then StartVM, each call on a new unix connection, as the Kata shim does; all
pods at once. Afterwards every pod is stopped (StopVM) and moto is checked for leftovers.

Method for "the adaptor's share" of the wall time (from the first CreateVM to the last
StartVM answer): the union of the intervals in which some pod was waiting on something else
is subtracted from the wall time:
  - moto: every EC2 request's time in flight, measured at the proxy (adaptor -> proxy -> moto),
  - the limiter: every non-zero token wait inside the adaptor,
  - the "VM boot": per pod, from its RunInstances answer to its forwarder listening (moto
    boots nothing; this is the fleet's polling delay, a stand-in for a real boot).
What is left is time in which no pod waited on any of these: the adaptor's own work (and
its dial backoff after the forwarder came up). CPU seconds of each process are reported too;
the adaptor's CPU time is the most direct measure of its cost.

Run from the repository root, as root:

    .venv/bin/python benchmarks/aws_adaptor_bench.py [--pods 100] [--rate R] [--poll 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from protocols.kata import hypervisor_pb2
from protocols.ttrpc import Client
from tests.adaptor.shim import Shim, shim_annotations
from tests.providers.aws.nsworld import AwsAdaptorWorld, aws_adaptor_world

Interval = tuple[float, float]


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def union_seconds(intervals: list[Interval], lo: float, hi: float) -> float:
    """Length of the union of ``intervals`` clipped to [lo, hi]."""
    total, end = 0.0, lo
    for start, stop in sorted(intervals):
        start, stop = max(start, end), min(stop, hi)
        if stop > start:
            total += stop - start
            end = stop
    return total


@dataclass
class Pod:
    sid: str
    began: float = 0.0
    created: float = 0.0
    started: float = 0.0


async def one_pod(shim: Shim, n: int) -> Pod:
    pod = Pod(secrets.token_hex(32))
    pod.began = time.monotonic()
    await shim.create_vm(pod.sid, shim_annotations(pod=f"bench-{n}", namespace="bench"),
                         netns=f"/var/run/netns/cni-{pod.sid[:8]}")
    pod.created = time.monotonic()
    await shim.start_vm(pod.sid, timeout=600)
    pod.started = time.monotonic()
    return pod


def max_overlap(intervals: list[Interval]) -> int:
    """The largest number of intervals open at one moment."""
    edges = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    most = current = 0
    for _, step in edges:
        current += step
        most = max(most, current)
    return most


def load(path: str) -> Any:
    return json.loads(Path(path).read_text())


async def stop_vm(socket_path: str, sid: str) -> None:
    """StopVM as the shim sends it, with room for a slow limiter (the shim's own helper
    gives up after 60 s)."""
    async with await Client.connect_unix(socket_path) as client:
        await client.call("hypervisor.Hypervisor", "StopVM", hypervisor_pb2.StopVMRequest(id=sid),
                          hypervisor_pb2.StopVMResponse, timeout=600)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(args: argparse.Namespace) -> int:
    node = f"bench-{uuid.uuid4().hex[:6]}"
    async with aws_adaptor_world(node, timed_proxy=True, fleet_poll=args.poll) as world:
        proxy_url = world.events("ready")[0]["proxy"]
        waits_path = os.path.join(world.root, "limiter-waits.json")
        env = {"LOG_LEVEL": "info", "PROXY_TIMEOUT": "10m"}
        if args.rate is not None:
            env["AWS_API_RATE"] = str(args.rate)
        await world.start_adaptor(
            env, endpoint=proxy_url,
            command=[sys.executable, "-m", "tests.providers.aws.timed_adaptor", waits_path,
                     "aws"],
        )
        return await measure(world, args, waits_path)


async def measure(world: AwsAdaptorWorld, args: argparse.Namespace, waits_path: str) -> int:
    assert world.adaptor is not None
    pids = {"adaptor": world.adaptor.pid, "moto_server": world.moto.pid,
            "stand-in VMs + EC2 proxy": world.fleet.pid}
    shim = Shim(world.socket)
    cpu0 = {name: proc_cpu_seconds(pid) for name, pid in pids.items()}
    t0 = time.monotonic()
    pods = await asyncio.gather(*(one_pod(shim, n) for n in range(args.pods)))
    t1 = time.monotonic()
    cpu = {name: proc_cpu_seconds(pid) - cpu0[name] for name, pid in pids.items()}

    stop0 = time.monotonic()
    await asyncio.gather(*(stop_vm(world.socket, p.sid) for p in pods))
    stop_wall = time.monotonic() - stop0
    instances = await world.ec2.instances(world.node)
    states = [i["State"]["Name"] for i in instances]

    world.stop_adaptor()
    world.stop_fleet()
    limiter: list[Interval] = [(a, b) for a, b in load(waits_path)["limiter_waits"]]
    requests = load(world.proxy_stats_path)["intervals"]
    moto: list[Interval] = [(a, b) for _, a, b, _ in requests]
    run_end = {sid: b for action, _, b, sid in requests if action == "RunInstances" and sid}
    up = {e["sandbox"]: e["t"] for e in world.events("started")}
    boot: list[Interval] = [(run_end[p.sid], up[p.sid]) for p in pods
                            if p.sid in run_end and p.sid in up]
    after_up = [p.started - up[p.sid] for p in pods if p.sid in up]
    dialing: list[Interval] = [(up[p.sid], p.started) for p in pods if p.sid in up]
    creating: list[Interval] = [(p.began, p.created) for p in pods]

    wall = t1 - t0
    moto_u = union_seconds(moto, t0, t1)
    limiter_u = union_seconds(limiter, t0, t1)
    boot_u = union_seconds(boot, t0, t1)
    others = union_seconds(moto + limiter + boot, t0, t1)
    in_window = [r for r in requests if t0 <= r[1] <= t1]
    by_action: dict[str, int] = {}
    for action, *_ in in_window:
        by_action[action] = by_action.get(action, 0) + 1
    start_lat = [p.started - p.created for p in pods]
    create_lat = [p.created - p.began for p in pods]

    print(f"pods={args.pods} AWS_API_RATE={args.rate if args.rate is not None else 'default'} "
          f"fleet poll={args.poll}s")
    print(f"wall time, first CreateVM to last StartVM   {wall:8.2f} s "
          f"({args.pods / wall:.1f} pods/s)")
    print(f"CreateVM latency p50 / max                  {statistics.median(create_lat):8.3f} / "
          f"{max(create_lat):.3f} s")
    print(f"StartVM latency p50 / p95 / max             {statistics.median(start_lat):8.2f} / "
          f"{pct(start_lat, 0.95):.2f} / {max(start_lat):.2f} s")
    print(f"EC2 requests through the proxy              {len(in_window):8d}   "
          + ", ".join(f"{k} {v}" for k, v in sorted(by_action.items())))
    print(f"moto in flight (union)                      {moto_u:8.2f} s ({moto_u / wall:.0%}); "
          f"summed {sum(b - a for _, a, b, _ in in_window):.2f} s")
    waits = [(a, b) for a, b in limiter if t0 <= a <= t1]
    print(f"limiter holding some pod (union)            {limiter_u:8.2f} s "
          f"({limiter_u / wall:.0%}); {len(waits)} waits, summed "
          f"{sum(b - a for a, b in waits):.2f} s")
    boot_each = [b - a for a, b in boot]
    print(f"stand-in VM boot (RunInstances -> listening){boot_u:8.2f} s ({boot_u / wall:.0%}); "
          f"per pod p50 {statistics.median(boot_each):.2f} s, max {max(boot_each):.2f} s")
    print(f"some pod waiting on any of these (union)    {others:8.2f} s ({others / wall:.0%})")
    print(f"adaptor's share: wall minus that union      {wall - others:8.2f} s "
          f"({(wall - others) / wall:.0%}), of which")
    only_create = union_seconds(moto + limiter + boot + creating, t0, t1) - others
    only_dial = union_seconds(moto + limiter + boot + dialing, t0, t1) - others
    print(f"  some CreateVM in progress                 {only_create:8.2f} s")
    print(f"  some StartVM dialling a listening forwarder {only_dial:6.2f} s")
    print(f"  neither (StartVM work around EC2 calls)   "
          f"{wall - union_seconds(moto + limiter + boot + creating + dialing, t0, t1):8.2f} s")
    print(f"EC2 requests in flight at once, max         {max_overlap(moto):8d}")
    print(f"StartVM answer after forwarder up p50 / max {statistics.median(after_up):8.2f} / "
          f"{max(after_up):.2f} s  (dial backoff + TLS + listen)")
    for name, seconds in cpu.items():
        print(f"CPU {name:<40}{seconds:8.2f} s ({seconds / wall:.0%} of one core)")
    print(f"StopVM all (concurrently)                   {stop_wall:8.2f} s; moto: "
          f"{states.count('terminated')} terminated, "
          f"{sum(s in ('pending', 'running') for s in states)} running")
    ok = len(instances) == args.pods and all(s == "terminated" for s in states)
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--rate", type=float, default=None,
                        help="AWS_API_RATE for the adaptor (default: its own default)")
    parser.add_argument("--poll", type=float, default=0.2,
                        help="how often the stand-in VMs poll moto for new instances (s)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("aws_adaptor_bench: needs root (network namespaces)", file=sys.stderr)
        return 2
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
