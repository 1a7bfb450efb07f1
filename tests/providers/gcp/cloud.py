"""The loopback Compute endpoint and stand-in pod VMs, run inside a test network namespace.

    python -m tests.providers.gcp.cloud --port PORT --forwarder-port PORT --agents DIR \\
        --events FILE --not-in-netns INODE

It serves :class:`tests.providers.gcp.computeserver.ComputeServer` on 127.0.0.1 of the
namespace and plays every VM the adaptor creates: once an instance's insert is done it puts
the instance's ``networkIP`` on ``lo`` of this namespace (``<ip>/32``) and serves a test
forwarder (mutual TLS from the instance's ``apf.json`` in its user-data) on
``<ip>:<forwarder-port>``, relaying to the test agent of the sandbox; once the instance is
gone the forwarder stops and the address goes. Every step is one JSON line in ``--events``
(``ready`` first; on SIGTERM a ``summary`` with every insert body and what is left).

It refuses to run in the machine's own namespace (``--not-in-netns``): it adds addresses
and listens on them.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import signal
import sys
import time
from collections.abc import Coroutine
from typing import Any

from providers.base import SANDBOX_TAG
from tests.fakes.forwarder import TestForwarder
from tests.providers.aws.fleet import (
    add_loopback_address,
    agent_socket,
    netns_id,
    remove_loopback_address,
)
from tests.providers.gcp.computeserver import ComputeServer


def _metadata(instance: dict[str, Any], key: str) -> str:
    for item in instance.get("metadata", {}).get("items", ()):
        if item.get("key") == key:
            return str(item.get("value", ""))
    return ""


class Fleet:
    def __init__(self, port: int, agents_dir: str, events: Any) -> None:
        self.port = port
        self.agents_dir = agents_dir
        self.events = events
        self.forwarders: dict[str, TestForwarder] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def emit(self, event: dict[str, Any]) -> None:
        event["t"] = time.monotonic()
        self.events.write(json.dumps(event) + "\n")

    def _spawn(self, step: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(step)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def running(self, instance: dict[str, Any]) -> None:
        self._spawn(self._boot(dict(instance)))

    def gone(self, instance: dict[str, Any]) -> None:
        self._spawn(self._retire(dict(instance)))

    async def _boot(self, instance: dict[str, Any]) -> None:
        ip = instance["networkInterfaces"][0]["networkIP"]
        tags = json.loads(_metadata(instance, "peerpods-tags") or "{}")
        sandbox = tags.get(SANDBOX_TAG, "")
        try:
            user_data = base64.b64decode(_metadata(instance, "user-data"))
            forwarder = TestForwarder(user_data, ip, self.port,
                                      agent_socket(self.agents_dir, sandbox))
            await asyncio.to_thread(add_loopback_address, ip)
            await forwarder.start()
        except Exception as exc:
            self.emit({"event": "failed", "instance": instance["id"], "ip": ip,
                       "error": f"{type(exc).__name__}: {exc}"})
            return
        self.forwarders[instance["id"]] = forwarder
        self.emit({"event": "started", "instance": instance["id"], "name": instance["name"],
                   "ip": ip, "sandbox": sandbox, "tls": forwarder.tls,
                   "pod": forwarder.config.pod_name,
                   "namespace": forwarder.config.pod_namespace,
                   "user_data_b64": _metadata(instance, "user-data")})

    async def _retire(self, instance: dict[str, Any]) -> None:
        forwarder = self.forwarders.pop(instance["id"], None)
        if forwarder is not None:
            await forwarder.stop()
        ip = instance["networkInterfaces"][0]["networkIP"]
        await asyncio.to_thread(remove_loopback_address, ip)
        self.emit({"event": "stopped", "instance": instance["id"], "ip": ip})

    async def aclose(self) -> None:
        for task in list(self.tasks):
            await task
        for forwarder in self.forwarders.values():
            await forwarder.stop()


async def main_async(args: argparse.Namespace) -> int:
    with open(args.events, "a", buffering=1) as events:  # noqa: ASYNC230 - line-buffered log
        fleet = Fleet(args.forwarder_port, args.agents, events)
        server = ComputeServer(project=args.project, zone=args.zone)
        server.on_running = fleet.running
        server.on_gone = fleet.gone
        await server.start("127.0.0.1", args.port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        fleet.emit({"event": "ready", "url": server.url})
        try:
            await stop.wait()
        finally:
            await fleet.aclose()
            inserts = [c.body for c in server.calls("POST", "/instances")]
            fleet.emit({"event": "summary", "inserts": inserts,
                        "left": sorted(server.instances),
                        "deletes": len(server.calls("DELETE"))})
            await server.aclose()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cloud", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True, help="Compute endpoint port")
    parser.add_argument("--forwarder-port", type=int, required=True)
    parser.add_argument("--agents", required=True, help="directory of the test agents' sockets")
    parser.add_argument("--events", required=True, help="JSON-lines event file")
    parser.add_argument("--project", default="pp-project")
    parser.add_argument("--zone", default="us-central1-a")
    parser.add_argument("--not-in-netns", type=int, required=True,
                        help="inode of the machine's network namespace (see netns_id)")
    args = parser.parse_args(argv)
    if netns_id() == args.not_in_netns:
        print("cloud: refusing to run in the machine's own network namespace", file=sys.stderr)
        return 2
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
