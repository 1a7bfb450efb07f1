"""The Provider contract: value types, the protocol every cloud driver implements, errors.

Providers import only this module (and ``runtime.settings``) from the project, plus
their own cloud SDK. The adaptor talks to every cloud through :class:`Provider`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from ipaddress import IPv4Address, IPv6Address
from typing import Protocol, runtime_checkable

from runtime.errors import PeerPodsError

IPAddress = IPv4Address | IPv6Address

# Logical tag keys the adaptor puts on every instance it creates. A provider whose cloud
# restricts tag keys or values (GCP labels, Azure tags) maps them on the way out and back,
# so that ``list_instances`` accepts and returns these same logical keys and values.
NODE_TAG = "peerpods-node"
SANDBOX_TAG = "peerpods-sandbox"
POD_NAME_TAG = "peerpods-pod-name"
POD_NAMESPACE_TAG = "peerpods-pod-namespace"


def adaptor_tags(
    node_name: str, sandbox_id: str, pod_name: str, pod_namespace: str
) -> dict[str, str]:
    """The logical tags the adaptor puts on every instance it creates (the one place they
    are built); ``list_instances`` finds them again by any subset."""
    return {
        NODE_TAG: node_name,
        SANDBOX_TAG: sandbox_id,
        POD_NAME_TAG: pod_name,
        POD_NAMESPACE_TAG: pod_namespace,
    }


@dataclass(frozen=True, slots=True)
class InstanceSpec:
    """What the pod asks for, after the adaptor resolved the annotations.

    ``instance_type`` is the type the adaptor selected (``None`` for providers without
    instance types, such as libvirt). ``vcpus`` and ``memory_mib`` are the annotation values
    (0 when absent). ``image`` is the image override annotation, ``None`` when absent.
    """

    instance_type: str | None = None
    vcpus: int = 0
    memory_mib: int = 0
    gpus: int = 0
    gpu_model: str = ""
    image: str | None = None
    volumes: tuple[str, ...] = ()
    multi_nic: bool = False


@dataclass(frozen=True, slots=True)
class InstanceRequest:
    """One pod VM to create. The name and user-data are made by the adaptor, never invented."""

    name: str
    sandbox_id: str
    pod_name: str
    pod_namespace: str
    user_data: bytes
    spec: InstanceSpec = InstanceSpec()
    tags: Mapping[str, str] = field(default_factory=dict)
    # Which creation this is for the sandbox: 0 for the first, one more for each create after
    # an earlier instance of the sandbox was deleted. Kept in the sandbox record, so that a
    # retry of the same creation (after a restart) carries the same value. Providers with
    # idempotency tokens derive them from (sandbox_id, attempt).
    attempt: int = 0


@dataclass(frozen=True, slots=True)
class Instance:
    """A pod VM as the cloud reports it.

    ``created_at`` (timezone-aware) lets the orphan sweep honour its grace period; ``None``
    when the cloud does not tell, in which case the sweep treats the instance as old.
    """

    id: str
    name: str
    ips: tuple[IPAddress, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    created_at: datetime | None = None
    state: str = ""


@dataclass(frozen=True, slots=True)
class InstanceTypeInfo:
    name: str
    vcpus: int
    memory_mib: int
    gpus: int = 0


@dataclass(frozen=True, slots=True)
class InstanceTypeCatalogue:
    """The instance types a provider may use, for the adaptor's selection.

    ``default`` is the provider's default type. ``allowed`` is the configured allow-list by
    name (empty when none is configured). ``specs`` holds the sizes the cloud reported for
    every allowed type (or for the default alone when there is no allow-list).
    """

    default: str
    allowed: tuple[str, ...] = ()
    specs: tuple[InstanceTypeInfo, ...] = ()


@runtime_checkable
class Provider(Protocol):
    name: str

    async def create_instance(self, request: InstanceRequest) -> Instance:
        """Create and boot one pod VM named ``request.name``, tagged with ``request.tags``.

        On success the VM is booting and ``ips`` is non-empty. On failure, everything this
        call created has already been released.
        """
        ...

    async def delete_instance(self, instance_id: str) -> None:
        """Delete the VM and its provider-side extras. Deleting a missing VM succeeds."""
        ...

    async def list_instances(self, tags: Mapping[str, str]) -> list[Instance]:
        """Instances carrying all these tags (used by the orphan sweep)."""
        ...

    async def instance_types(self) -> InstanceTypeCatalogue | None:
        """The instance-type catalogue, or ``None`` when this cloud has no instance types."""
        ...

    async def verify_config(self) -> None:
        """Check that the configured cloud resources exist; raise :class:`ConfigError`."""
        ...

    async def aclose(self) -> None: ...


class ProviderError(PeerPodsError):
    """Base of every error a provider raises. SDK exceptions never leave a provider."""


class InstanceNotFound(ProviderError):
    def __init__(self, instance_id: str) -> None:
        super().__init__(f"instance {instance_id} not found")
        self.instance_id = instance_id


class QuotaExceeded(ProviderError):
    """The cloud has no capacity or the account's quota is used up."""


class Throttled(ProviderError):
    """The cloud API rate limit was hit and retries did not get through in time."""


class InvalidSpec(ProviderError):
    """The request cannot be satisfied as given (unknown image, bad instance type, ...)."""


class ProviderUnavailable(ProviderError):
    """The cloud API cannot be reached or answered with a server error."""


class ConfigError(ProviderError):
    """The provider's settings are wrong or name cloud resources that do not exist."""
