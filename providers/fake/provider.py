"""An in-memory cloud provider with fault injection.

Every instance gets its own loopback address 127.0.0.N (N >= 2), so that each "pod VM" can
serve the same forwarder port. ``on_create``/``on_delete`` hooks let a test boot something
for the instance (see ``tests.fakes.cloud``).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import IPv4Address

from providers.base import (
    ConfigError,
    Instance,
    InstanceRequest,
    InstanceState,
    InstanceTypeCatalogue,
    ProviderUnavailable,
    QuotaExceeded,
)
from providers.kit import SPEC_FIELDS, instance_tags, matches, refuse_unsupported
from runtime.settings import setting

Hook = Callable[[InstanceRequest, Instance], Awaitable[None]]

# Everything but ``volumes``: by default the fake stands for a cloud that cannot attach
# disks (tests that attach them set ``honoured`` to every field).
DEFAULT_HONOURED = tuple(name for name in SPEC_FIELDS if name != "volumes")


@dataclass
class Faults:
    """Knobs a test turns; counters go down as faults fire."""

    fail_create: Exception | None = None  # raised by every create_instance
    fail_delete_times: int = 0  # the next N deletes raise ProviderUnavailable
    create_delay: float = 0.0  # seconds create_instance takes
    no_ips: bool = False  # instances come back without IPs
    config_error: str = ""  # verify_config raises ConfigError(config_error)


class InMemoryProvider:
    name = "fake"

    def __init__(
        self,
        *,
        catalogue: InstanceTypeCatalogue | None = None,
        faults: Faults | None = None,
        on_create: Hook | None = None,
        on_delete: Hook | None = None,
        honoured: Collection[str] = DEFAULT_HONOURED,
    ) -> None:
        self.catalogue = catalogue
        self.faults = faults or Faults()
        self.on_create = on_create
        self.on_delete = on_delete
        self.honoured = tuple(honoured)
        self.instances: dict[str, Instance] = {}
        self.requests: dict[str, InstanceRequest] = {}
        self.created: list[str] = []
        self.deleted: list[str] = []
        self.create_calls = 0
        self.delete_calls = 0
        self.closed = False
        self._ids = itertools.count(1)
        self._free_hosts = list(range(2, 255))

    async def create_instance(self, request: InstanceRequest) -> Instance:
        self.create_calls += 1
        refuse_unsupported(request.spec, self.name, self.honoured)
        if self.faults.create_delay:
            await asyncio.sleep(self.faults.create_delay)
        if self.faults.fail_create is not None:
            raise self.faults.fail_create
        existing = self._of_sandbox(request.sandbox_id)
        if existing is not None:
            return existing
        if not self._free_hosts:
            raise QuotaExceeded("the fake cloud has no loopback address left")
        instance_id = f"i-{next(self._ids):04d}"
        ips = () if self.faults.no_ips else (IPv4Address(f"127.0.0.{self._free_hosts.pop(0)}"),)
        instance = Instance(id=instance_id, name=request.name, ips=ips,
                            tags=instance_tags(request), created_at=datetime.now(UTC),
                            state=InstanceState.RUNNING)
        self.instances[instance_id] = instance
        self.requests[instance_id] = request
        self.created.append(instance_id)
        if self.on_create is not None:
            await self.on_create(request, instance)
        return instance

    def _of_sandbox(self, sandbox_id: str) -> Instance | None:
        for instance_id, request in self.requests.items():
            if request.sandbox_id == sandbox_id and instance_id in self.instances:
                return self.instances[instance_id]
        return None

    async def delete_instance(self, instance_id: str) -> None:
        self.delete_calls += 1
        if self.faults.fail_delete_times > 0:
            self.faults.fail_delete_times -= 1
            raise ProviderUnavailable(f"injected delete failure for {instance_id}")
        instance = self.instances.pop(instance_id, None)
        if instance is None:
            return
        self.deleted.append(instance_id)
        request = self.requests.get(instance_id)
        if request is None:  # added with add_instance: nothing was booted for it
            return
        if instance.ips:
            self._free_hosts.append(int(str(instance.ips[0]).rsplit(".", 1)[1]))
        if self.on_delete is not None:
            await self.on_delete(request, instance)

    def add_instance(self, instance: Instance) -> None:
        """Put an instance into the cloud directly (made by someone else, or leaked)."""
        self.instances[instance.id] = instance

    async def list_instances(self, tags: Mapping[str, str]) -> list[Instance]:
        return [i for i in self.instances.values() if matches(i.tags, tags)]

    async def instance_types(self) -> InstanceTypeCatalogue | None:
        return self.catalogue

    async def verify_config(self) -> None:
        if self.faults.config_error:
            raise ConfigError(self.faults.config_error)

    async def aclose(self) -> None:
        self.closed = True


@dataclass(frozen=True)
class Settings:
    """Settings of the ``fake`` provider package (for CLI tests)."""

    TITLE = "fake provider settings"

    instance_type: str = setting(
        env="FAKE_INSTANCE_TYPE", flag="fake-instance-type", default="small",
        help="default instance type",
    )
    verify_error: str = setting(
        env="FAKE_VERIFY_ERROR", flag="fake-verify-error", default="",
        help="make verify_config fail with this message",
    )
    api_key: str = setting(
        env="FAKE_API_KEY", flag="fake-api-key", default="", secret=True, help="a secret",
    )


def make_provider(settings: Settings, *, node_name: str) -> InMemoryProvider:
    return InMemoryProvider(
        catalogue=InstanceTypeCatalogue(default=settings.instance_type),
        faults=Faults(config_error=settings.verify_error),
    )
