"""The loopback ARM endpoint with stand-in pod VMs, run inside a test network namespace.

    python -m tests.providers.azure.armworld --port PORT --subnet CIDR --dir DIR \\
        --forwarder-port PORT --agents DIR --not-in-netns INODE

Serves :class:`tests.providers.azure.armserver.ArmServer` on 127.0.0.1:PORT of the namespace
(its CA in ``DIR/ca.pem``, the names the adaptor needs in ``DIR/world.json``). When a VM's
create operation succeeds, the VM "boots": its private NIC address (from CIDR) goes on ``lo``
of this namespace and a test forwarder (mutual TLS from the VM's user data) serves on it,
relaying to the sandbox's test agent; when the VM is deleted, both go. Every step is a JSON
line in ``DIR/events.jsonl``; on SIGTERM what ARM still holds is written to ``DIR/final.json``.

It refuses to run in the namespace named by ``--not-in-netns`` (the machine's own).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from providers.base import SANDBOX_TAG
from tests.fakes.forwarder import TestForwarder
from tests.providers.aws.fleet import (
    add_loopback_address,
    agent_socket,
    netns_id,
    remove_loopback_address,
)
from tests.providers.azure.armserver import ArmServer
from tests.providers.azure.conftest import managed_image, new_state


class Vms:
    """The stand-in VMs: one forwarder per booted VM, on its private address."""

    def __init__(self, port: int, agents: str, events: Any) -> None:
        self.port, self.agents, self._events = port, agents, events
        self.forwarders: dict[str, tuple[TestForwarder, str]] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.state: Any = None

    def emit(self, event: dict[str, Any]) -> None:
        event["t"] = time.monotonic()
        self._events.write(json.dumps(event) + "\n")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def ready(self, vm: dict[str, Any], user_data_b64: str) -> None:
        self._spawn(self._boot(dict(vm), user_data_b64))

    def removed(self, vm: dict[str, Any]) -> None:
        self._spawn(self._retire(vm["id"]))

    async def _boot(self, vm: dict[str, Any], user_data_b64: str) -> None:
        ip = self._private_ip(vm)
        sandbox = vm["tags"].get(SANDBOX_TAG, "")
        try:
            forwarder = TestForwarder(base64.b64decode(user_data_b64), ip, self.port,
                                      agent_socket(self.agents, sandbox))
            await asyncio.to_thread(add_loopback_address, ip)
            await forwarder.start()
        except Exception as exc:
            self.emit({"event": "failed", "instance": vm["id"], "ip": ip,
                       "error": f"{type(exc).__name__}: {exc}"})
            return
        self.forwarders[vm["id"]] = (forwarder, ip)
        self.emit({"event": "started", "instance": vm["id"], "ip": ip, "sandbox": sandbox,
                   "tls": forwarder.tls, "pod": forwarder.config.pod_name,
                   "namespace": forwarder.config.pod_namespace})

    def _private_ip(self, vm: dict[str, Any]) -> str:
        nic_name = vm["properties"]["networkProfile"]["networkInterfaces"][0]["id"]
        nic = self.state.nics[nic_name.rsplit("/", 1)[1].lower()]
        return str(nic["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"])

    async def _retire(self, instance_id: str) -> None:
        found = self.forwarders.pop(instance_id, None)
        if found is None:
            return
        forwarder, ip = found
        await forwarder.stop()
        await asyncio.to_thread(remove_loopback_address, ip)
        self.emit({"event": "stopped", "instance": instance_id, "ip": ip})

    async def aclose(self) -> None:
        for instance_id in list(self.forwarders):
            await self._retire(instance_id)


async def main_async(args: argparse.Namespace) -> int:
    out = Path(args.dir)
    state = new_state(args.subnet)
    state.faults.poll_after_ms = args.poll_after_ms
    with open(out / "events.jsonl", "a", buffering=1) as events:  # noqa: ASYNC230
        vms = Vms(args.forwarder_port, args.agents, events)
        vms.state = state
        state.on_vm_ready, state.on_vm_removed = vms.ready, vms.removed
        server = await ArmServer(state, port=args.port).start()
        shutil.copyfile(server.ca_file, out / "ca.pem")
        (out / "world.json").write_text(json.dumps({
            "url": server.url, "subscription": state.subscription,
            "resource_group": state.resource_group, "region": state.region,
            "tenant": state.tenant, "client_id": state.client_id,
            "client_secret": state.client_secret, "image_id": managed_image(state),
            "subnet_id": state.resource_id("Microsoft.Network", "virtualNetworks", "vnet-1")
            + "/subnets/pods",
        }))
        vms.emit({"event": "ready", "url": server.url})
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        try:
            await stop.wait()
        finally:
            await vms.aclose()
            (out / "final.json").write_text(json.dumps({
                "vms": sorted(v["id"] for v in state.vms.values()),
                "nics": sorted(n["id"] for n in state.nics.values()),
                "disks": sorted(d["id"] for d in state.disks.values()),
                "public_ips": sorted(p["id"] for p in state.public_ips.values()),
                "created": [b["properties"]["osProfile"]["computerName"]
                            for b in state.vm_bodies],
                "token_requests": server.token_requests,
                "requests": [[s.method, s.path, s.status] for s in server.seen],
            }))
            with contextlib.suppress(Exception):
                await server.aclose()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="armworld", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--subnet", required=True, help="CIDR of the pod VMs' subnet")
    parser.add_argument("--dir", required=True, help="where ca.pem, world.json, events go")
    parser.add_argument("--forwarder-port", type=int, required=True)
    parser.add_argument("--agents", required=True, help="directory of the test agents' sockets")
    parser.add_argument("--poll-after-ms", type=int, default=100,
                        help="retry-after-ms of long-running operations")
    parser.add_argument("--not-in-netns", type=int, required=True,
                        help="inode of the machine's network namespace")
    args = parser.parse_args(argv)
    if netns_id() == args.not_in_netns:
        print("armworld: refusing to run in the machine's own network namespace",
              file=sys.stderr)
        return 2
    os.makedirs(args.dir, exist_ok=True)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
