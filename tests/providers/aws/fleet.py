"""Stand-in pod VMs for the adaptor on moto_server, run inside a test network namespace.

    python -m tests.providers.aws.fleet --endpoint URL --node NODE --port PORT \\
        --agents DIR --events FILE [--proxy-stats FILE]

moto boots nothing, so this process plays every VM the adaptor creates. It polls EC2
(DescribeInstances, filtered by the node tag); for each new instance it reads the user-data
(DescribeInstanceAttribute ``userData``), assigns the instance's private IP to ``lo`` of this
namespace (``<ip>/32`` on ``lo``, over netlink) and serves a test forwarder
(:class:`tests.fakes.forwarder.TestForwarder`: mutual TLS from the instance's ``apf.json``) on
``<ip>:<port>``, relaying to the test agent at :func:`agent_socket`. Once the instance is
shutting down or terminated its forwarder stops and the address goes. Every step is one JSON
line in ``--events``; the first line (``ready``) is written after the first poll succeeded.

With ``--proxy-stats`` it also serves the recording EC2 proxy of the test suite
(:class:`tests.providers.aws.ec2proxy.Ec2Proxy`) on 127.0.0.1 of the namespace, announced in
the ``ready`` line; the adaptor is pointed at it and, on SIGTERM, the interval of every
request it forwarded to moto is written to that file (``time.monotonic``, which all processes
of the machine share).

It refuses to run in the namespace named by ``--not-in-netns`` (the machine's, where the test
runs): it adds addresses and listens on them, and moto's instance addresses are private ones.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import errno
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import boto3
from aiohttp import web
from botocore.config import Config
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from providers.base import NODE_TAG, SANDBOX_TAG
from tests.fakes.forwarder import TestForwarder
from tests.providers.aws.ec2proxy import Ec2Proxy
from tests.providers.aws.motoserver import REGION

POLL_INTERVAL = 0.1
BOOT_CONCURRENCY = 8
GONE_STATES = ("shutting-down", "terminated")
AGENT_NAME_CHARS = 16


def agent_socket(agents_dir: str, sandbox_id: str) -> str:
    """Where the test agent of a sandbox listens (short: unix paths stay under 108 bytes)."""
    return os.path.join(agents_dir, f"{sandbox_id[:AGENT_NAME_CHARS]}.sock")


def netns_id(pid: str = "self") -> int:
    """The inode of a process's network namespace."""
    return os.stat(f"/proc/{pid}/ns/net").st_ino


class TimedEc2Proxy(Ec2Proxy):
    """The test suite's EC2 proxy, also keeping each forwarded request's interval as
    ``(action, started, ended, sandbox id)``; the sandbox id (from the sandbox tag) is set
    for RunInstances only."""

    intervals: list[tuple[str, float, float, str]]

    async def _forward(self, request: web.Request, body: bytes) -> tuple[int, bytes, str]:
        params = dict(parse_qsl(body.decode("utf-8", "replace")))
        sandbox = _sandbox_tag(params) if params.get("Action") == "RunInstances" else ""
        started = time.monotonic()
        try:
            return await super()._forward(request, body)
        finally:
            self.intervals.append(
                (params.get("Action", ""), started, time.monotonic(), sandbox)
            )


def _sandbox_tag(params: dict[str, str]) -> str:
    """The sandbox tag's value in a RunInstances query (``TagSpecification.N.Tag.M.*``)."""
    for key, value in params.items():
        if key.endswith(".Key") and value == SANDBOX_TAG:
            return params.get(key[: -len("Key")] + "Value", "")
    return ""


def add_loopback_address(ip: str) -> None:
    """``<ip>/32`` on ``lo`` of this process's network namespace (blocking: run in a thread;
    pyroute2's synchronous API cannot run inside an event loop)."""
    with IPRoute() as ipr:
        lo = ipr.link_lookup(ifname="lo")[0]
        try:
            ipr.addr("add", index=lo, address=ip, prefixlen=32)
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise


def remove_loopback_address(ip: str) -> None:
    with IPRoute() as ipr, contextlib.suppress(NetlinkError):
        lo = ipr.link_lookup(ifname="lo")[0]
        ipr.addr("del", index=lo, address=ip, prefixlen=32)


@dataclass
class Fleet:
    endpoint: str
    node: str
    port: int
    agents_dir: str
    emit: Callable[[dict[str, Any]], None]
    poll_interval: float = POLL_INTERVAL
    forwarders: dict[str, TestForwarder] = field(default_factory=dict)
    addresses: dict[str, str] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)
    _client: Any = None

    def _ec2(self) -> Any:
        if self._client is None:
            self._client = boto3.client(
                "ec2", region_name=REGION, endpoint_url=self.endpoint,
                aws_access_key_id="fleet", aws_secret_access_key="fleet-secret",
                config=Config(retries={"total_max_attempts": 3},
                              max_pool_connections=BOOT_CONCURRENCY + 2),
            )
        return self._client

    def _instances(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        pages = self._ec2().get_paginator("describe_instances").paginate(
            Filters=[{"Name": f"tag:{NODE_TAG}", "Values": [self.node]}]
        )
        for page in pages:
            for reservation in page["Reservations"]:
                found.extend(reservation["Instances"])
        return found

    def _user_data(self, instance_id: str) -> bytes:
        answer = self._ec2().describe_instance_attribute(
            InstanceId=instance_id, Attribute="userData"
        )
        value = answer.get("UserData", {}).get("Value", "")
        return base64.b64decode(value) if value else b""

    async def poll(self) -> None:
        """One look at EC2; new instances boot and gone ones retire, a few at a time."""
        steps: list[Awaitable[None]] = []
        for item in await asyncio.to_thread(self._instances):
            instance_id = str(item["InstanceId"])
            state = str(item["State"]["Name"])
            if state in GONE_STATES:
                if instance_id in self.forwarders or instance_id in self.addresses:
                    steps.append(self._retire(instance_id, state))
            elif instance_id not in self.forwarders and instance_id not in self.failed:
                steps.append(self._boot(instance_id, item))
        gate = asyncio.Semaphore(BOOT_CONCURRENCY)

        async def gated(step: Awaitable[None]) -> None:
            async with gate:
                await step

        await asyncio.gather(*(gated(step) for step in steps))

    async def _boot(self, instance_id: str, item: dict[str, Any]) -> None:
        tags = {t["Key"]: t["Value"] for t in item.get("Tags", ())}
        sandbox_id = tags.get(SANDBOX_TAG, "")
        ip = str(item.get("PrivateIpAddress") or "")
        if not ip or not sandbox_id:
            return  # not there yet: the next poll looks again
        try:
            user_data = await asyncio.to_thread(self._user_data, instance_id)
            forwarder = TestForwarder(user_data, ip, self.port,
                                      agent_socket(self.agents_dir, sandbox_id))
            await asyncio.to_thread(add_loopback_address, ip)
            self.addresses[instance_id] = ip
            await forwarder.start()
        except Exception as exc:
            self.failed.add(instance_id)
            self.emit({"event": "failed", "instance": instance_id, "ip": ip,
                       "sandbox": sandbox_id, "error": f"{type(exc).__name__}: {exc}"})
            return
        self.forwarders[instance_id] = forwarder
        self.emit({"event": "started", "instance": instance_id, "ip": ip,
                   "sandbox": sandbox_id, "tls": forwarder.tls,
                   "pod": forwarder.config.pod_name,
                   "namespace": forwarder.config.pod_namespace})

    async def _retire(self, instance_id: str, state: str) -> None:
        forwarder = self.forwarders.pop(instance_id, None)
        if forwarder is not None:
            await forwarder.stop()
        ip = self.addresses.pop(instance_id, None)
        if ip is not None:
            await asyncio.to_thread(remove_loopback_address, ip)
        self.emit({"event": "stopped", "instance": instance_id, "ip": ip or "", "state": state})

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.poll()
            except Exception as exc:  # moto busy or restarting: report, keep serving
                self.emit({"event": "poll-error", "error": f"{type(exc).__name__}: {exc}"})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll_interval)

    async def aclose(self) -> None:
        for instance_id in list(self.forwarders):
            await self.forwarders.pop(instance_id).stop()


async def main_async(args: argparse.Namespace) -> int:
    with open(args.events, "a", buffering=1) as events:  # noqa: ASYNC230 - line-buffered log

        def emit(event: dict[str, Any]) -> None:
            event["t"] = time.monotonic()
            events.write(json.dumps(event) + "\n")

        proxy: TimedEc2Proxy | None = None
        if args.proxy_stats:
            proxy = TimedEc2Proxy(upstream=args.endpoint)
            proxy.intervals = []
            await proxy.start()
        fleet = Fleet(args.endpoint, args.node, args.port, args.agents, emit,
                      poll_interval=args.poll_interval)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        try:
            await fleet.poll()
            emit({"event": "ready", "proxy": proxy.url if proxy is not None else ""})
            await fleet.run(stop)
        finally:
            await fleet.aclose()
            if proxy is not None:
                await proxy.aclose()
                with open(args.proxy_stats, "w") as stats:  # noqa: ASYNC230 - at exit
                    json.dump({"intervals": proxy.intervals}, stats)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fleet", description=__doc__.split("\n")[0])
    parser.add_argument("--endpoint", required=True, help="moto_server URL")
    parser.add_argument("--node", required=True, help="value of the node tag to watch")
    parser.add_argument("--port", type=int, required=True, help="forwarder port")
    parser.add_argument("--agents", required=True, help="directory of the test agents' sockets")
    parser.add_argument("--events", required=True, help="JSON-lines event file")
    parser.add_argument("--proxy-stats", default="", help="serve a timed EC2 proxy; stats file")
    parser.add_argument("--poll-interval", type=float, default=POLL_INTERVAL)
    parser.add_argument("--not-in-netns", type=int, required=True,
                        help="inode of the machine's network namespace (see netns_id)")
    args = parser.parse_args(argv)
    if netns_id() == args.not_in_netns:
        print("fleet: refusing to run in the machine's own network namespace", file=sys.stderr)
        return 2
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
