"""The Azure provider: confidential VMs through azure-mgmt-compute and azure-mgmt-network.

Every SDK call runs on the provider's worker threads behind a client-side token bucket and
a retry loop (:class:`providers.kit.SdkCaller`); azure-core's own retry policy honours
``Retry-After`` first. A VM is PUT under a name fixed by the sandbox (and the creation
attempt), so a retried create updates the same VM instead of making a second one; the NIC
and OS disk it makes are deleted with it, and a failed create removes them by name.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from ipaddress import ip_address
from typing import Any

from providers.azure import bodies, disks, errors
from providers.azure.clients import Clients, generate_ssh_public_key, make_clients
from providers.azure.settings import (
    READ_BURST_SECONDS,
    READ_RATE_FACTOR,
    WRITE_BURST_SECONDS,
    AzureSettings,
)
from providers.azure.verify import verify_config
from providers.base import (
    SANDBOX_TAG,
    Instance,
    InstanceRequest,
    InstanceState,
    InstanceTypeCatalogue,
    InstanceTypeInfo,
    IPAddress,
    ProviderError,
)
from providers.kit import (
    BlockingCalls,
    SdkCaller,
    instance_tags,
    matches,
    refuse_unsupported,
    translate_errors,
)
from providers.ratelimit import TokenBucket

log = logging.getLogger(__name__)

CONCURRENT_CALLS = 32
HONOURED_SPEC = ("instance_type", "vcpus", "memory_mib", "gpus", "image", "volumes")


class AzureProvider:
    name = "azure"

    def __init__(
        self,
        settings: AzureSettings,
        *,
        node_name: str,
        connection_verify: str | bool | None = None,
        polling_interval: float = 5.0,
    ) -> None:
        self._settings = settings
        self._node = node_name
        self._verify = connection_verify
        self._polling_interval = polling_interval
        self._clients: Clients | None = None
        self._ready_lock = asyncio.Lock()
        self._ssh_key: str | None = None
        self._ssh_key_lock = asyncio.Lock()
        self._threads = BlockingCalls(CONCURRENT_CALLS, "arm")
        self._sdk = SdkCaller(
            self._threads, errors.classify, settings.api_timeout.total_seconds())
        rate = settings.api_rate
        self._write_bucket: TokenBucket | None = None
        self._read_bucket: TokenBucket | None = None
        if rate > 0:
            self._write_bucket = TokenBucket(rate, max(1.0, rate * WRITE_BURST_SECONDS))
            read = rate * READ_RATE_FACTOR
            self._read_bucket = TokenBucket(read, max(1.0, read * READ_BURST_SECONDS))

    # ----------------------------------------------------------------- setup

    async def _ready(self) -> Clients:
        if self._clients is None:
            async with self._ready_lock:
                if self._clients is None:
                    try:
                        self._clients = await self._threads.run(
                            make_clients, self._settings, pool=CONCURRENT_CALLS,
                            polling_interval=self._polling_interval, verify=self._verify)
                    except Exception as exc:
                        raise errors.translate(exc, action="client setup") from exc
        return self._clients

    async def _public_key(self) -> str:
        path = os.path.expandvars(self._settings.ssh_key_path)
        if path:
            log.info("Using existing SSH public key from %s", path)
            try:
                return (await self._threads.run(_read_text, path)).strip()
            except OSError as exc:
                raise ProviderError(f"reading ssh public key file: {exc}") from exc
        async with self._ssh_key_lock:
            if self._ssh_key is None:
                log.info("SSH public key path is empty, generating new public key")
                self._ssh_key = await self._threads.run(generate_ssh_public_key)
            return self._ssh_key

    async def call(
        self, fn: Callable[..., Any], *args: Any, action: str, write: bool = False,
        translate: Callable[[Exception], ProviderError] | None = None, **kwargs: Any,
    ) -> Any:
        """One blocking SDK call through the limiter and the retry loop; errors translated."""

        def on_retry(exc: Exception, attempt_no: int, delay: float) -> None:
            log.debug("ARM %s: %s, retry %d in %.2fs", action,
                      errors.error_code(exc) or type(exc).__name__, attempt_no, delay)

        return await self._sdk.call(
            fn, *args,
            translate=translate or (lambda exc: errors.translate(exc, action=action)),
            limiter=self._write_bucket if write else self._read_bucket,
            on_retry=on_retry, **kwargs,
        )

    async def long_running(
        self, begin: Callable[..., Any], *args: Any, action: str,
        translate: Callable[[Exception], ProviderError] | None = None,
    ) -> Any:
        """A long-running ARM operation: the first request through :meth:`call` (limited,
        retried), then the wait on azure-core's own polling thread, so that a worker
        thread is not held for the minutes a VM create takes."""
        translate = translate or (lambda exc: errors.translate(exc, action=action))
        poller = await self.call(begin, *args, action=action, write=True, translate=translate)
        loop = asyncio.get_running_loop()
        finished: asyncio.Future[None] = loop.create_future()

        def settle() -> None:
            if not finished.done():
                finished.set_result(None)

        def done(_method: Any) -> None:
            loop.call_soon_threadsafe(settle)

        poller.add_done_callback(done)
        if poller.done():
            done(None)
        await finished
        with translate_errors(translate):
            return await self._threads.run(poller.result)

    # -------------------------------------------------------------- Provider

    async def create_instance(self, request: InstanceRequest) -> Instance:
        s = self._settings
        sid = request.sandbox_id
        refuse_unsupported(request.spec, self.name, HONOURED_SPEC)
        user_data = bodies.encode_user_data(request.user_data)
        clients = await self._ready()
        existing = await self._vms(clients, {SANDBOX_TAG: sid})
        if existing:
            vm = existing[0]
            log.info("sandbox=%s instance=%s: reusing the instance already created for it",
                     sid, vm.id)
            return bodies.to_instance(vm, await self._ips(clients, vm))
        name = bodies.vm_name(request)
        size = request.spec.instance_type or s.default_instance_size
        image_id = s.image_id
        if request.spec.image:
            image_id = request.spec.image
            log.info("sandbox=%s: Choosing %s from annotation as the Azure Image for the PodVM "
                     "image", sid, image_id)
        if request.spec.volumes:
            await self._check_volumes(clients, size, request.spec.volumes)
        await self._remove_leftovers(clients, name)
        body = bodies.vm_body(
            name=name, computer_name=request.name, size=size, image_id=image_id,
            user_data=user_data, ssh_public_key=await self._public_key(),
            tags=instance_tags(request, defaults=s.extra_tags), s=s,
        )
        if request.spec.volumes:
            disks.add_data_disks(body, request.spec.volumes)
            for lun, disk_id in enumerate(request.spec.volumes):
                log.info("sandbox=%s: Attaching data disk: LUN %d, ID: %s", sid, lun, disk_id)
        log.info("sandbox=%s: creating VM %s (size %s)", sid, name, size)
        try:
            vm = await self.long_running(
                clients.compute.virtual_machines.begin_create_or_update, s.resource_group,
                name, body, action="create VM", translate=lambda exc: errors.translate(
                    exc, action="create VM", size=size, image_id=image_id),
            )
            ips = await self._ips(clients, vm)
        except BaseException:
            await self._release_quietly(clients, s.resource_group, name)
            raise
        log.info("sandbox=%s instance=%s: created VM %s", sid, vm.id, name)
        return bodies.to_instance(vm, ips)

    async def _check_volumes(self, clients: Clients, size: str, volumes: tuple[str, ...]) -> None:
        try:
            sizes = await self.call(_list, clients.compute.virtual_machine_sizes.list,
                                    self._settings.region, action="list VM sizes")
        except ProviderError as exc:
            log.warning("could not list VM sizes for disk count validation: %s", exc)
        else:
            disks.check_count(sizes, size, len(volumes))

        async def get_disk(rg: str, name: str) -> Any:
            return await self.call(_get_or_none, clients.compute.disks.get, rg, name,
                                   action="get disk")

        await disks.check_disks(get_disk, volumes, self._settings.region)

    async def _ips(self, clients: Clients, vm: Any) -> tuple[IPAddress, ...]:
        """Public addresses first (when ``USE_PUBLIC_IP``), then private ones, from the NICs."""
        private: list[IPAddress] = []
        public: list[IPAddress] = []
        for nic_id in bodies.nic_ids(vm):
            nic = await self._get_child(clients.network.network_interfaces.get, nic_id,
                                        "networkInterfaces", action="get NIC")
            found, public_ids = bodies.nic_addresses(nic)
            private.extend(found)
            if self._settings.use_public_ip:
                for public_id in public_ids:
                    pip = await self._get_child(clients.network.public_ip_addresses.get,
                                                public_id, "publicIPAddresses",
                                                action="get public IP")
                    address = getattr(getattr(pip, "properties", None), "ip_address", None)
                    if address:
                        public.append(ip_address(address))
        if not private:
            raise ProviderError(f"VM {vm.id} has no private IP address on its NICs")
        return (*public, *private)

    async def _get_child(
        self, fn: Callable[..., Any], resource_id: str, kind: str, *, action: str,
    ) -> Any:
        parsed = bodies.parse_resource_id(resource_id)
        if parsed is None:
            raise ProviderError(f"{action}: malformed resource id {resource_id}")
        return await self.call(fn, parsed.resource_group, parsed.name_of(kind), action=action)

    async def _remove_leftovers(self, clients: Clients, name: str) -> None:
        """A NIC or OS disk of this name that no VM holds was left by a create that failed
        or was cut short: remove it before the VM makes its own again."""
        rg = self._settings.resource_group
        nic, disk = await asyncio.gather(
            self._maybe(clients.network.network_interfaces.get, rg, bodies.nic_name(name)),
            self._maybe(clients.compute.disks.get, rg, bodies.disk_name(name)),
        )
        if nic is not None and getattr(nic.properties, "virtual_machine", None) is None:
            log.info("removing NIC %s left by an earlier create", nic.name)
            await self.long_running(clients.network.network_interfaces.begin_delete, rg,
                                    nic.name, action="delete NIC")
        if disk is not None and not getattr(disk, "managed_by", None):
            log.info("removing disk %s left by an earlier create", disk.name)
            await self.long_running(clients.compute.disks.begin_delete, rg, disk.name,
                                    action="delete disk")

    async def _maybe(self, fn: Callable[..., Any], *args: Any) -> Any:
        def absent(exc: Exception) -> ProviderError:
            return errors.translate(exc, action="look up leftovers")

        try:
            return await self.call(_get_or_none, fn, *args, action="look up leftovers",
                                   translate=absent)
        except ProviderError as exc:
            log.warning("could not look for leftovers: %s", exc)
            return None

    async def _release_quietly(self, clients: Clients, rg: str, name: str) -> None:
        try:
            await self.long_running(clients.compute.virtual_machines.begin_delete, rg, name,
                                    action="delete VM")
            await self._remove_leftovers(clients, name)
        except ProviderError as exc:
            log.error("VM %s: could not release after a failed create: %s", name, exc)

    async def delete_instance(self, instance_id: str) -> None:
        where = bodies.vm_name_of(instance_id)
        if where is None:
            log.info("instance=%s: not a VM resource id, nothing to delete", instance_id)
            return
        rg, name = where
        clients = await self._ready()
        await self.long_running(clients.compute.virtual_machines.begin_delete, rg, name,
                                action="delete VM")
        log.info("instance=%s: deleted", instance_id)

    async def _vms(self, clients: Clients, tags: Mapping[str, str]) -> list[Any]:
        found = await self.call(_list, clients.compute.virtual_machines.list,
                                self._settings.resource_group, action="list VMs")
        return [vm for vm in found
                if matches(bodies.TAGS.from_cloud(dict(vm.tags or {}), bodies.LOGICAL_KEYS),
                           tags)
                and bodies.vm_state(vm) != InstanceState.TERMINATED]

    async def list_instances(self, tags: Mapping[str, str]) -> list[Instance]:
        clients = await self._ready()
        vms = await self._vms(clients, tags)
        if not vms:
            return []
        nics = await self.call(_list, clients.network.network_interfaces.list,
                               self._settings.resource_group, action="list NICs")
        by_vm: dict[str, list[IPAddress]] = {}
        for nic in nics:
            owner = getattr(getattr(nic.properties, "virtual_machine", None), "id", None)
            if owner:
                by_vm.setdefault(str(owner).lower(), []).extend(bodies.nic_addresses(nic)[0])
        return [bodies.to_instance(vm, tuple(by_vm.get(str(vm.id).lower(), ())))
                for vm in vms]

    async def instance_types(self) -> InstanceTypeCatalogue:
        s = self._settings
        names = list(s.instance_sizes) or [s.default_instance_size]
        clients = await self._ready()
        sizes = await self.call(_list, clients.compute.virtual_machine_sizes.list, s.region,
                                action="list VM sizes")
        known = {str(size.name): size for size in sizes}
        specs = [InstanceTypeInfo(name=name, vcpus=int(known[name].number_of_cores),
                                  memory_mib=int(known[name].memory_in_mb))
                 for name in names if name in known]
        missing = [name for name in names if name not in known]
        if missing:
            log.warning("VM sizes not offered in %s: %s", s.region, ", ".join(missing))
        return InstanceTypeCatalogue(
            default=s.default_instance_size, allowed=tuple(s.instance_sizes),
            specs=tuple(specs))

    async def verify_config(self) -> None:
        await verify_config(self, await self._ready(), self._settings)

    async def aclose(self) -> None:
        clients, self._clients = self._clients, None
        if clients is not None:
            await self._threads.run(clients.close)
        self._threads.close()


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _list(fn: Callable[..., Any], *args: Any) -> list[Any]:
    return list(fn(*args))


def _get_or_none(fn: Callable[..., Any], *args: Any) -> Any:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return fn(*args)
    except ResourceNotFoundError:
        return None
