"""The libvirt provider: pod VMs as libvirt domains with a qcow2 overlay and a config drive."""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid as uuidlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import libvirt

from providers.base import (
    ConfigError,
    Instance,
    InstanceRequest,
    InstanceState,
    InstanceTypeCatalogue,
    InvalidSpec,
    ProviderError,
    adaptor_tags,
)
from providers.kit import instance_tags, refuse_unsupported, state_of, translate_errors
from providers.libvirt import cidata, domains, storage
from providers.libvirt.capabilities import (
    ARCH_AARCH64,
    ARCH_S390X,
    ARCH_X86_64,
    HostCapabilities,
    normalize_arch,
    parse_capabilities,
)
from providers.libvirt.config import LAUNCH_SECURITY_S390_PV, Settings, validate
from providers.libvirt.connection import Connection, Opener, is_missing, translate
from providers.libvirt.datadisks import DataDisk
from providers.libvirt.datadisks import resolve as resolve_data_disk
from providers.libvirt.domain import DomainConfig, LaunchSecurity, build_domain_xml
from providers.libvirt.metadata import InstanceMetadata
from providers.libvirt.volume import VolumeNames

log = logging.getLogger(__name__)

T = TypeVar("T")

# Writes the config drive bytes into a freshly created raw volume.
Uploader = Callable[[libvirt.virConnect, libvirt.virStorageVol, bytes], None]

IP_POLL_INTERVAL = 3.0
# Domains have no instance types, and GPUs are not attached.
# multi_nic: a second interface on LIBVIRT_NET (providers.libvirt.domain)
HONOURED_SPEC = ("vcpus", "memory_mib", "image", "volumes", "multi_nic")


@dataclass(frozen=True, slots=True)
class HostInfo:
    arch: str
    capabilities: HostCapabilities
    domain_type: str


class LibvirtProvider:
    name = "libvirt"

    def __init__(
        self,
        settings: Settings,
        *,
        node_name: str,
        opener: Opener | None = None,
        uploader: Uploader = storage.stream_upload,
    ) -> None:
        self.settings = settings
        self.node_name = node_name
        self._conn = Connection(settings.uri, opener)
        self._upload = uploader
        self._host: HostInfo | None = None

    # -- plumbing -------------------------------------------------------------------------

    async def _call(
        self, fn: Callable[[libvirt.virConnect], T], context: str, instance_id: str = ""
    ) -> T:
        table = functools.partial(translate, context=context, instance_id=instance_id)
        with translate_errors(table, catch=(libvirt.libvirtError,)):
            return await self._conn.run(fn)

    def _pool(self, conn: libvirt.virConnect) -> libvirt.virStoragePool:
        return conn.storagePoolLookupByName(self.settings.pool_name)

    async def host(self) -> HostInfo:
        """Architecture, capabilities and the domain type to use (read once)."""
        if self._host is None:

            def read(conn: libvirt.virConnect) -> tuple[str, str]:
                return str(conn.getInfo()[0]), str(conn.getCapabilities())

            model, caps_xml = await self._call(read, "reading host capabilities")
            arch = normalize_arch(model)
            caps = parse_capabilities(caps_xml)
            wanted = self.settings.domain_type
            if wanted == "auto":
                domain_type = "kvm" if caps.supports(arch, "kvm") else "qemu"
                reason = "the host offers KVM" if domain_type == "kvm" else "the host has no KVM"
            else:
                domain_type, reason = wanted, "LIBVIRT_DOMAIN_TYPE"
            how = "hardware virtualization" if domain_type == "kvm" else "emulation"
            log.info(
                "libvirt host %s (%s): pod VMs use %s, domain type %s (%s)",
                self.settings.uri, arch, how, domain_type, reason,
            )
            self._host = HostInfo(arch=arch, capabilities=caps, domain_type=domain_type)
        return self._host

    def _launch_security(self, arch: str) -> LaunchSecurity:
        wanted = self.settings.launch_security
        if self.settings.disable_cvm:
            return LaunchSecurity.NONE
        if wanted:
            if wanted == LAUNCH_SECURITY_S390_PV:
                return LaunchSecurity.S390_PV
            raise InvalidSpec(f"[{wanted}] is not a known launch security setting")
        return LaunchSecurity.S390_PV if arch == ARCH_S390X else LaunchSecurity.NONE

    # -- create ---------------------------------------------------------------------------

    async def create_instance(self, request: InstanceRequest) -> Instance:
        name = request.name
        spec = request.spec
        refuse_unsupported(spec, self.name, HONOURED_SPEC)
        vcpus = spec.vcpus or self.settings.cpu
        memory = spec.memory_mib or self.settings.memory
        base_volume = spec.image or self.settings.vol_name
        log.info("Choosing %s as libvirt volume for the PodVM image", base_volume)
        if vcpus <= 0 or memory <= 0:
            raise InvalidSpec(f"instance={name}: vCPUs and memory must be greater than zero")
        host = await self.host()
        launch_security = self._launch_security(host.arch)
        log.info("instance=%s: LaunchSecurityType: %s", name, launch_security.value)

        reused = await self._reuse_or_clear(request)
        if reused is not None:
            return reused
        data_disks = await self._data_disks(name, spec.volumes)

        tags = instance_tags(request, defaults=adaptor_tags(
            self.node_name, request.sandbox_id, request.pod_name, request.pod_namespace))
        created_at = datetime.now(UTC).replace(microsecond=0)
        names = VolumeNames.for_instance(name)
        try:
            root_path = await self._call(
                lambda conn: self._create_root(conn, names.root, base_volume),
                f"instance={name}: creating the root volume",
            )
            iso = cidata.build_iso(request.user_data, name)
            iso_path = await self._call(
                lambda conn: self._create_cidata(conn, names.cidata, iso),
                f"instance={name}: uploading the config drive",
            )
            guest = host.capabilities.guest(host.arch)
            machine = ""
            if host.arch == ARCH_S390X:
                machine = host.capabilities.canonical_machine(host.arch, "s390-ccw-virtio")
            elif host.arch == ARCH_AARCH64:
                machine = host.capabilities.canonical_machine(host.arch, "virt")
            xml = build_domain_xml(
                DomainConfig(
                    name=name,
                    arch=host.arch,
                    domain_type=host.domain_type,
                    vcpus=vcpus,
                    memory_mib=memory,
                    network=self.settings.network_name,
                    boot_disk=root_path,
                    cidata_disk=iso_path,
                    meta=InstanceMetadata(tags=tags, created_at=created_at),
                    firmware=self.settings.firmware,
                    cpuset=self.settings.cpuset,
                    machine=machine,
                    emulator=guest.emulator if guest and host.arch != ARCH_X86_64 else "",
                    launch_security=launch_security,
                    data_disks=data_disks,
                    nics=2 if spec.multi_nic else 1,
                )
            )
            log.info("instance=%s sandbox=%s: defining and starting the domain",
                     name, request.sandbox_id)
            instance_id = await self._call(
                lambda conn: domains.define_and_start(conn, xml),
                f"instance={name}: starting the domain",
            )
            ips = await self._wait_for_addresses(name, instance_id)
        except BaseException as exc:
            # A cancellation (see Provider.create_instance) releases what it reaches without
            # waiting for the step in flight; a leftover is removed by the next create of this
            # name or, once defined, by the orphan sweep.
            await self._release_after_failure(name, exc)
            raise
        log.info("instance=%s id=%s sandbox=%s: pod VM running, ips=%s",
                 name, instance_id, request.sandbox_id, ",".join(map(str, ips)))
        return Instance(
            id=instance_id, name=name, ips=ips, tags=tags, created_at=created_at,
            state=InstanceState.RUNNING,
        )

    async def _data_disks(self, name: str, volumes: tuple[str, ...]) -> tuple[DataDisk, ...]:
        if not volumes:
            return ()
        return tuple(await self._call(
            lambda conn: [resolve_data_disk(conn, disk_id) for disk_id in volumes],
            f"instance={name}: looking up the pod's volumes",
        ))

    def _create_root(self, conn: libvirt.virConnect, name: str, base: str) -> str:
        pool = self._pool(conn)
        storage.refresh_pool(pool)
        return storage.create_overlay(conn, pool, name, base, self.settings.root_disk_size)

    def _create_cidata(self, conn: libvirt.virConnect, name: str, iso: bytes) -> str:
        pool = self._pool(conn)
        vol = storage.create_raw(pool, name, len(iso))
        self._upload(conn, vol, iso)
        return str(vol.path())

    async def _wait_for_addresses(self, name: str, instance_id: str) -> tuple[Any, ...]:
        """Poll the domain's addresses until it has one, the time is up or it stops."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.ip_timeout.total_seconds()
        while True:

            def poll(conn: libvirt.virConnect) -> tuple[str, tuple[Any, ...]]:
                dom = conn.lookupByUUIDString(instance_id)
                state = domains.state_name(dom)
                return state, domains.addresses(dom) if state == "running" else ()

            state, ips = await self._call(
                poll, f"instance={name}: reading addresses", instance_id
            )
            if ips:
                return ips
            if state != "running":
                raise ProviderError(f"instance={name}: domain is {state}, not running")
            if loop.time() >= deadline:
                raise ProviderError(
                    f"Domain (uuid={instance_id}) IP addresses not found within "
                    f"{self.settings.ip_timeout.total_seconds():g}s"
                )
            await asyncio.sleep(min(IP_POLL_INTERVAL, max(0.0, deadline - loop.time())))

    async def _release_after_failure(self, name: str, exc: BaseException) -> None:
        what = "cancelled" if isinstance(exc, asyncio.CancelledError) else f"failed: {exc}"
        log.warning("instance=%s: create %s; releasing what it made", name, what)
        try:
            await self._call(
                lambda conn: self._remove_by_name(conn, name),
                f"instance={name}: releasing a failed create",
            )
        except ProviderError as cleanup_error:
            log.error("instance=%s: release after failed create: %s", name, cleanup_error)

    async def _reuse_or_clear(self, request: InstanceRequest) -> Instance | None:
        """A domain left over with this name: reuse it when it is this sandbox's and up with an
        address, otherwise remove it (and any leftover volumes of this name)."""
        name = request.name

        def inspect(conn: libvirt.virConnect) -> domains.DomainInfo | None:
            dom = domains.lookup_by_name(conn, name)
            return domains.describe(dom) if dom is not None else None

        info = await self._call(inspect, f"instance={name}: looking for a leftover domain")
        if info is not None and info.meta is None:
            raise InvalidSpec(
                f"instance={name}: a domain with this name exists and was not created by "
                "peerpods; refusing to replace it"
            )
        if (
            info is not None
            and info.meta is not None
            and info.meta.sandbox_id == request.sandbox_id
            and info.state == "running"
            and info.ips
        ):
            log.info("instance=%s id=%s sandbox=%s: reusing the running domain",
                     name, info.uuid, request.sandbox_id)
            return Instance(
                id=info.uuid, name=name, ips=info.ips, tags=dict(info.meta.tags),
                created_at=info.created_at, state=state_of(info.state, domains.STATES),
            )
        if info is not None:
            log.info("instance=%s id=%s: replacing a leftover domain (sandbox=%s, state=%s)",
                     name, info.uuid, info.meta.sandbox_id if info.meta else "", info.state)
        await self._call(
            lambda conn: self._remove_by_name(conn, name),
            f"instance={name}: removing leftovers",
        )
        return None

    def _remove_by_name(self, conn: libvirt.virConnect, name: str) -> None:
        """Remove our domain called ``name`` and the volumes named after it. A domain of that
        name that is not ours is left alone, and so are the volumes (they may be its)."""
        dom = domains.lookup_by_name(conn, name)
        if dom is not None:
            if domains.describe(dom, with_addresses=False).meta is None:
                log.warning("instance=%s: domain not created by peerpods; left alone", name)
                return
            domains.remove(conn, dom)
        pool = self._pool(conn)
        names = VolumeNames.for_instance(name)
        for vol_name in (names.root, names.cidata):
            if storage.delete_by_name(pool, vol_name):
                log.info("instance=%s: volume %s deleted", name, vol_name)

    # -- delete, list ---------------------------------------------------------------------

    async def delete_instance(self, instance_id: str) -> None:
        try:
            uuidlib.UUID(instance_id)
        except ValueError:
            log.warning("instance=%s: not a domain UUID; nothing to delete", instance_id)
            return

        def delete(conn: libvirt.virConnect) -> str | None:
            dom = domains.lookup_by_uuid(conn, instance_id)
            if dom is None:
                return None
            name = str(dom.name())
            domains.remove(conn, dom)
            # volumes of a domain whose create broke before they were attached
            pool = self._pool(conn)
            names = VolumeNames.for_instance(name)
            for vol_name in (names.root, names.cidata):
                storage.delete_by_name(pool, vol_name)
            return name

        name = await self._call(delete, f"instance={instance_id}: deleting", instance_id)
        if name is None:
            log.info("instance=%s: no such domain, nothing to delete", instance_id)
        else:
            log.info("instance=%s name=%s: pod VM deleted", instance_id, name)

    async def list_instances(self, tags: Mapping[str, str]) -> list[Instance]:
        def collect(conn: libvirt.virConnect) -> list[domains.DomainInfo]:
            found = []
            for dom in conn.listAllDomains(0):
                try:
                    info = domains.describe(dom)
                except libvirt.libvirtError as exc:
                    if is_missing(exc, "domain"):
                        continue  # deleted while we looked
                    raise
                if info.meta is not None and info.meta.matches(tags):
                    found.append(info)
            return found

        infos = await self._call(collect, "listing domains")
        return [
            Instance(
                id=info.uuid, name=info.name, ips=info.ips,
                tags=dict(info.meta.tags) if info.meta else {},
                created_at=info.created_at, state=state_of(info.state, domains.STATES),
            )
            for info in sorted(infos, key=lambda i: i.name)
        ]

    async def instance_types(self) -> InstanceTypeCatalogue | None:
        return None

    # -- config, lifecycle ----------------------------------------------------------------

    async def verify_config(self) -> None:
        validate(self.settings)
        settings = self.settings

        def check(conn: libvirt.virConnect) -> None:
            try:
                pool = conn.storagePoolLookupByName(settings.pool_name)
            except libvirt.libvirtError as exc:
                if is_missing(exc, "storage_pool"):
                    raise ConfigError(
                        f"libvirt storage pool {settings.pool_name!r} not found"
                    ) from exc
                raise
            if not pool.isActive():
                raise ConfigError(f"libvirt storage pool {settings.pool_name!r} is not active")
            try:
                conn.networkLookupByName(settings.network_name)
            except libvirt.libvirtError as exc:
                if is_missing(exc, "network"):
                    raise ConfigError(
                        f"libvirt network {settings.network_name!r} not found"
                    ) from exc
                raise
            storage.refresh_pool(pool)
            if storage.find_volume(conn, pool, settings.vol_name) is None:
                raise ConfigError(
                    f"libvirt volume {settings.vol_name!r} not found in storage pool "
                    f"{settings.pool_name!r}"
                )

        try:
            await self._call(check, "verifying the libvirt configuration")
        except ConfigError:
            raise
        except ProviderError as exc:
            raise ConfigError(str(exc)) from exc

    async def aclose(self) -> None:
        await self._conn.aclose()
