"""Network plumbing of local pod VMs, done with iproute2's ``ip``.

Layout: a bridge in the provider's own namespace holds the gateway address (first host of
the subnet). Each VM has a namespace ``ppvm-<id>`` with ``eth0`` (one end of a veth pair
whose other end, ``ppv<id>``, is a port of the bridge), the VM's address, and a default
route via the gateway; and an empty pod namespace ``ppvm-<id>-pod`` for the forwarder's
pod network. The provider's namespace is the worker's, so the adaptor reaches each VM at
its address through the bridge, and VXLAN between them needs no IP forwarding.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network

from providers.base import ProviderError
from providers.local.layout import host_veth, pod_netns, second_host_veth, vm_netns

log = logging.getLogger(__name__)

VM_INTERFACE = "eth0"
SECOND_VM_INTERFACE = "eth1"
_MISSING = ("Cannot find device", "No such file or directory", "does not exist",
            "Cannot open network namespace")


class IpCommandError(ProviderError):
    def __init__(self, argv: Sequence[str], status: int, stderr: str) -> None:
        super().__init__(f"{' '.join(argv)} failed (status {status}): {stderr.strip()}")
        self.stderr = stderr

    @property
    def missing(self) -> bool:
        return any(text in self.stderr for text in _MISSING)


async def ip(*args: str) -> str:
    """Run ``ip args...``; return stdout or raise :class:`IpCommandError`."""
    argv = ("ip", *args)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
        )
    except OSError as exc:
        raise IpCommandError(argv, 127, str(exc)) from None
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise IpCommandError(argv, proc.returncode or 1, err.decode(errors="replace"))
    return out.decode(errors="replace")


async def _ip_quiet_if_missing(*args: str) -> None:
    try:
        await ip(*args)
    except IpCommandError as exc:
        if not exc.missing:
            raise


async def ensure_bridge(bridge: str, gateway: IPv4Address, subnet: IPv4Network) -> None:
    """Create the bridge with the gateway address if needed, and bring it up."""
    try:
        await ip("link", "show", "dev", bridge)
    except IpCommandError as exc:
        if not exc.missing:
            raise
        await ip("link", "add", "name", bridge, "type", "bridge")
        log.info("bridge=%s: created for pod VMs in %s", bridge, subnet)
    addresses = await ip("-o", "-4", "addr", "show", "dev", bridge)
    wanted = f"{gateway}/{subnet.prefixlen}"
    if f" {wanted} " not in addresses:
        await ip("addr", "replace", wanted, "dev", bridge)
    await ip("link", "set", "dev", bridge, "up")


async def create_vm_network(
    instance_id: str, bridge: str, address: IPv4Address, gateway: IPv4Address,
    subnet: IPv4Network,
) -> None:
    """The VM's namespace, its veth to the bridge, address, default route; the pod netns."""
    vm, veth = vm_netns(instance_id), host_veth(instance_id)
    await ip("netns", "add", vm)
    await ip("-n", vm, "link", "set", "dev", "lo", "up")
    await ip("link", "add", "name", veth, "type", "veth", "peer", "name", VM_INTERFACE,
             "netns", vm)
    await ip("link", "set", "dev", veth, "master", bridge, "up")
    await ip("-n", vm, "addr", "add", f"{address}/{subnet.prefixlen}", "dev", VM_INTERFACE)
    await ip("-n", vm, "link", "set", "dev", VM_INTERFACE, "up")
    await ip("-n", vm, "route", "add", "default", "via", str(gateway))
    pod = pod_netns(instance_id)
    await ip("netns", "add", pod)
    await ip("-n", pod, "link", "set", "dev", "lo", "up")


async def add_second_nic(
    instance_id: str, bridge: str, address: IPv4Address, subnet: IPv4Network
) -> None:
    """The VM's second NIC ``eth1`` (``EXTERNAL_NETWORK_VIA_PODVM``): another veth on the
    same bridge with an address of the same subnet and no route of its own, as an AWS ENI
    in the pod VMs' subnet; the forwarder moves it into the pod netns. ``arp_ignore=1``:
    on one segment each NIC answers ARP for its own address only (a cloud's fabric does)."""
    vm, veth = vm_netns(instance_id), second_host_veth(instance_id)
    await ip("netns", "exec", vm, "sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1")
    await ip("link", "add", "name", veth, "type", "veth", "peer", "name", SECOND_VM_INTERFACE,
             "netns", vm)
    await ip("link", "set", "dev", veth, "master", bridge, "up")
    await ip("-n", vm, "addr", "add", f"{address}/{subnet.prefixlen}", "dev",
             SECOND_VM_INTERFACE)
    await ip("-n", vm, "link", "set", "dev", SECOND_VM_INTERFACE, "up")


async def netns_pids(name: str) -> list[int]:
    """Processes living in namespace ``name`` (none when it does not exist)."""
    try:
        out = await ip("netns", "pids", name)
    except IpCommandError as exc:
        if exc.missing:
            return []
        raise
    return [int(word) for word in out.split() if word.isdigit()]


async def delete_vm_network(instance_id: str) -> None:
    """Remove the VM's namespaces and veth; whatever is already gone is skipped."""
    for name in (pod_netns(instance_id), vm_netns(instance_id)):
        await _ip_quiet_if_missing("netns", "delete", name)
    for veth in (host_veth(instance_id), second_host_veth(instance_id)):
        await _ip_quiet_if_missing("link", "delete", "dev", veth)


async def exists(kind: str, name: str) -> bool:
    """Whether a namespace (``kind="netns"``) or a link (``kind="link"``) exists."""
    if kind == "netns":
        out = await ip("netns", "list")
        return any(line.split(" ", 1)[0] == name for line in out.splitlines())
    try:
        await ip("link", "show", "dev", name)
    except IpCommandError as exc:
        if exc.missing:
            return False
        raise
    return True
