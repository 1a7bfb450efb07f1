"""The local provider: each pod VM is a supervised process group, normally in its own netns.

See :mod:`providers.local.netns` for the network layout, :mod:`providers.local.vm` for what
runs inside a VM and :mod:`providers.local.layout` for its files. Records live on disk, so a
restarted adaptor lists and deletes VMs it started before, and the orphan sweep works.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import shlex
import shutil
import signal
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Network, ip_network
from pathlib import Path

from providers.base import (
    ConfigError,
    Instance,
    InstanceRequest,
    InstanceState,
    InstanceTypeCatalogue,
    InvalidSpec,
    ProviderError,
    QuotaExceeded,
)
from providers.kit import instance_tags, matches, refuse_unsupported
from providers.local import netns
from providers.local.layout import (
    ID_PATTERN,
    UNIX_PATH_MAX,
    VmPaths,
    VmRecord,
    pod_netns,
    poll_until,
    read_record,
    vm_netns,
    write_record,
)
from providers.local.settings import NETNS_MODES, LocalSettings

log = logging.getLogger(__name__)

STOP_GRACE = 5.0
# A pod VM is a group of processes sharing the host's CPUs and memory, so any vCPU and memory
# request is met; it has no instance types, images, GPUs or second NIC.
# multi_nic: a second veth in the VM's namespace (providers.local.netns.add_second_nic)
HONOURED_SPEC = ("vcpus", "memory_mib", "multi_nic")


def _parse_subnet(text: str, what: str) -> IPv4Network:
    try:
        network = ip_network(text.strip(), strict=True)
    except ValueError as exc:
        raise ConfigError(f"{what}: invalid IPv4 subnet {text!r}: {exc}") from None
    if not isinstance(network, IPv4Network):
        raise ConfigError(f"{what}: {text!r} is not an IPv4 subnet")
    if network.num_addresses < 4:
        raise ConfigError(f"{what}: {text!r} is too small (at least a /30 is needed)")
    return network


def _process_start(pid: int) -> int | None:
    """Start time (clock ticks since boot) of a live, non-zombie process, else ``None``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalProvider:
    name = "local"

    def __init__(self, settings: LocalSettings, *, node_name: str) -> None:
        self._settings = settings
        self._node_name = node_name
        self._state = Path(settings.state_dir)
        self._subnet = _parse_subnet(settings.subnet, "LOCAL_SUBNET")
        self._loopback = _parse_subnet(settings.loopback_subnet, "LOCAL_LOOPBACK_SUBNET")
        if not self._loopback.is_loopback:
            raise ConfigError(f"LOCAL_LOOPBACK_SUBNET: {settings.loopback_subnet!r} "
                              "is not inside 127.0.0.0/8")
        if settings.netns not in NETNS_MODES:
            raise ConfigError(f"LOCAL_NETNS: {settings.netns!r} is not one of "
                              f"{', '.join(NETNS_MODES)}")
        self._lock = asyncio.Lock()
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._use_netns: bool | None = None

    # ------------------------------------------------------------------ configuration

    @property
    def uses_netns(self) -> bool:
        """Whether pod VMs get network namespaces (decided once; logged when they do not)."""
        if self._use_netns is None:
            mode = self._settings.netns
            capable = os.geteuid() == 0 and shutil.which("ip") is not None
            self._use_netns = mode == "on" or (mode == "auto" and capable)
            if not self._use_netns:
                log.warning(
                    "local provider: no network namespaces (%s); pod VMs listen on loopback "
                    "addresses from %s and pod networking is disabled: run the adaptor with "
                    "TUNNEL_TYPE=none",
                    "LOCAL_NETNS=off" if mode == "off" else "not root or no ip command",
                    self._loopback,
                )
        return self._use_netns

    def _executable(self, configured: str, name: str) -> str:
        return configured or str(Path(sys.executable).parent / name)

    @property
    def process_user_data(self) -> str:
        return self._executable(self._settings.process_user_data, "process-user-data")

    @property
    def forwarder(self) -> str:
        return self._executable(self._settings.forwarder, "agent-protocol-forwarder")

    async def verify_config(self) -> None:
        await asyncio.to_thread(self._verify_config)

    def _verify_config(self) -> None:
        for what, path in (("process-user-data", self.process_user_data),
                           ("agent-protocol-forwarder", self.forwarder)):
            if not os.access(path, os.X_OK) or not os.path.isfile(path):
                raise ConfigError(f"{what} executable not found at {path}")
        if self._settings.agent_command:
            try:
                argv = shlex.split(self._settings.agent_command)
            except ValueError as exc:
                raise ConfigError(f"LOCAL_AGENT_COMMAND: {exc}") from None
            if not argv or shutil.which(argv[0]) is None:
                raise ConfigError(f"LOCAL_AGENT_COMMAND: cannot find {argv[:1] or 'a command'}")
        probe = VmPaths(self._state / ("0" * 10)).agent_socket
        if len(str(probe).encode()) > UNIX_PATH_MAX:
            raise ConfigError(f"LOCAL_STATE_DIR {self._state} is too long for the pod VMs' "
                              f"unix sockets ({probe})")
        if self._settings.netns == "on":
            if os.geteuid() != 0:
                raise ConfigError("LOCAL_NETNS=on needs root")
            if shutil.which("ip") is None:
                raise ConfigError("LOCAL_NETNS=on needs the ip command (iproute2)")

    async def instance_types(self) -> InstanceTypeCatalogue | None:
        return None

    async def aclose(self) -> None:
        """Forget the child handles. Pod VMs keep running: an adaptor restart keeps pods."""
        self._procs.clear()

    # ------------------------------------------------------------------ create

    async def create_instance(self, request: InstanceRequest) -> Instance:
        refuse_unsupported(request.spec, self.name, HONOURED_SPEC)
        use_netns = self.uses_netns
        if use_netns and os.geteuid() != 0:
            raise ConfigError("local provider: network namespaces need root")
        if request.spec.multi_nic and not use_netns:
            raise InvalidSpec("the local provider gives pod VMs a second NIC (multi_nic) only "
                              "with network namespaces (LOCAL_NETNS)")
        async with self._lock:
            existing = await self._existing(request.sandbox_id)
            if existing is not None:
                log.info("instance=%s sandbox=%s: reusing the running local pod VM",
                         existing.id, request.sandbox_id)
                return self._instance(existing, InstanceState.RUNNING)
            record = self._reserve(request, use_netns)
            paths = VmPaths(self._state / record.id)
        try:
            paths.cidata.mkdir(mode=0o700)
            fd = os.open(paths.user_data, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(request.user_data)
            address = IPv4Address(record.address)
            if use_netns:
                gateway = self._gateway()
                async with self._lock:
                    await netns.ensure_bridge(self._settings.bridge, gateway, self._subnet)
                await netns.create_vm_network(record.id, self._settings.bridge, address,
                                              gateway, self._subnet)
                if record.second_address:
                    await netns.add_second_nic(record.id, self._settings.bridge,
                                               IPv4Address(record.second_address), self._subnet)
            proc = await self._start(record, paths, use_netns)
            record = dataclasses.replace(record, pid=proc.pid, pid_start=_process_start(proc.pid))
            write_record(paths, record)
        except BaseException as exc:
            await asyncio.shield(self._destroy(record.id))
            if isinstance(exc, OSError):
                raise ProviderError(f"creating local pod VM {request.name}: {exc}") from exc
            raise
        log.info("instance=%s name=%s sandbox=%s: local pod VM started at %s (%s)", record.id,
                 record.name, request.sandbox_id, record.address,
                 f"netns {vm_netns(record.id)}" if use_netns else "loopback")
        return self._instance(record, InstanceState.RUNNING)

    async def _existing(self, sandbox_id: str) -> VmRecord | None:
        """The sandbox's running VM; a dead one of the sandbox is removed (caller holds the
        lock)."""
        for record in await asyncio.to_thread(self._records):
            if record.sandbox_id != sandbox_id:
                continue
            if self._alive(record):
                return record
            log.info("instance=%s sandbox=%s: removing the sandbox's stopped local pod VM",
                     record.id, sandbox_id)
            await self._destroy(record.id)
        return None

    def _gateway(self) -> IPv4Address:
        return next(iter(self._subnet.hosts()))

    def _reserve(self, request: InstanceRequest, use_netns: bool) -> VmRecord:
        """Pick an id and a free address and write the record (caller holds the lock)."""
        subnet = self._subnet if use_netns else self._loopback
        used = {a for record in self._records() for a in (record.address, record.second_address)}
        hosts = iter(subnet.hosts())
        next(hosts)  # the bridge's address, or 127.0.0.1 of the host itself
        free = (str(h) for h in hosts if str(h) not in used)
        address = next(free, None)
        second = next(free, None) if request.spec.multi_nic else ""
        if address is None or second is None:
            raise QuotaExceeded(f"no free address left in {subnet} for a local pod VM")
        self._state.mkdir(parents=True, exist_ok=True)
        for _ in range(10):
            instance_id = secrets.token_hex(5)
            paths = VmPaths(self._state / instance_id)
            try:
                paths.root.mkdir(mode=0o700)
            except FileExistsError:
                continue
            break
        else:
            raise ProviderError("cannot find a free instance id")
        tags = instance_tags(request)
        record = VmRecord(
            id=instance_id, name=request.name, address=address, netns=use_netns,
            second_address=second,
            created_at=datetime.now(UTC), tags=tags, sandbox_id=request.sandbox_id,
        )
        try:
            write_record(paths, record)
        except BaseException:
            shutil.rmtree(paths.root, ignore_errors=True)
            raise
        return record

    async def _start(
        self, record: VmRecord, paths: VmPaths, use_netns: bool
    ) -> asyncio.subprocess.Process:
        listen_host = "0.0.0.0" if use_netns else record.address
        argv = [
            sys.executable, "-m", "providers.local.vm",
            "--dir", str(paths.root),
            "--id", record.id,
            "--listen", f"{listen_host}:{self._settings.forwarder_port}",
            "--pod-netns", f"/run/netns/{pod_netns(record.id)}",
            "--process-user-data", self.process_user_data,
            "--forwarder", self.forwarder,
            "--agent-command", self._settings.agent_command,
        ]
        if use_netns:
            argv = ["ip", "netns", "exec", vm_netns(record.id), *argv]
        log_fd = os.open(paths.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=log_fd,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True, cwd=paths.root,
            )
        finally:
            os.close(log_fd)
        self._procs[record.id] = proc
        return proc

    # ------------------------------------------------------------------ delete

    async def delete_instance(self, instance_id: str) -> None:
        if not ID_PATTERN.fullmatch(instance_id):
            log.info("instance=%s: not a local instance id, nothing to delete", instance_id)
            return
        await self._destroy(instance_id)
        log.info("instance=%s: local pod VM deleted", instance_id)

    async def _destroy(self, instance_id: str) -> None:
        """Stop the VM's processes, remove its namespaces, veth and directory. Idempotent."""
        paths = VmPaths(self._state / instance_id)
        record = read_record(paths)
        proc = self._procs.pop(instance_id, None)
        pgid: int | None = None
        if proc is not None and proc.returncode is None:
            pgid = proc.pid
        elif record is not None and record.pid is not None and record.pid_start is not None:
            if _process_start(record.pid) == record.pid_start:
                pgid = record.pid
        if pgid is not None:
            await self._stop_group(instance_id, pgid, proc)
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_GRACE):
                    await proc.wait()
        use_netns = record.netns if record is not None else self.uses_netns
        if use_netns and os.geteuid() == 0:
            for name in (vm_netns(instance_id), pod_netns(instance_id)):
                for pid in await netns.netns_pids(name):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            await netns.delete_vm_network(instance_id)
        await asyncio.to_thread(shutil.rmtree, paths.root, True)

    async def _stop_group(
        self, instance_id: str, pgid: int, proc: asyncio.subprocess.Process | None
    ) -> None:
        """SIGTERM the VM's process group, SIGKILL what is left after a grace period."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        if not await poll_until(lambda: not _group_exists(pgid), STOP_GRACE):
            log.warning("instance=%s: pod VM did not stop in %gs, killing it", instance_id,
                        STOP_GRACE)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)

    # ------------------------------------------------------------------ list

    def _records(self) -> list[VmRecord]:
        try:
            entries = sorted(os.listdir(self._state))
        except FileNotFoundError:
            return []
        records = []
        for entry in entries:
            if ID_PATTERN.fullmatch(entry):
                record = read_record(VmPaths(self._state / entry))
                if record is not None:
                    records.append(record)
        return records

    def _alive(self, record: VmRecord) -> bool:
        proc = self._procs.get(record.id)
        if proc is not None:
            return proc.returncode is None
        return record.pid is not None and record.pid_start is not None and \
            _process_start(record.pid) == record.pid_start

    def _instance(self, record: VmRecord, state: InstanceState) -> Instance:
        return Instance(
            id=record.id, name=record.name, ips=(IPv4Address(record.address),),
            tags=dict(record.tags), created_at=record.created_at, state=state,
        )

    async def list_instances(self, tags: Mapping[str, str]) -> list[Instance]:
        records = await asyncio.to_thread(self._records)
        return [
            self._instance(
                record, InstanceState.RUNNING if self._alive(record) else InstanceState.STOPPED
            )
            for record in records
            if matches(record.tags, tags)
        ]
