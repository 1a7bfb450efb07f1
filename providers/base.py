"""The Provider contract: value types, the protocol every cloud driver implements, errors.

Providers import only this module, :mod:`providers.kit` (and :mod:`providers.ratelimit`)
and :mod:`runtime` from the project, plus their own cloud SDK. The adaptor talks to every
cloud through :class:`Provider`; ``tests/providers/test_contract.py`` checks every provider
against the postconditions written on its methods below.

Adding a provider, in five steps (``<cloud>`` is the provider's name):

1. ``providers/<cloud>/settings.py``: a frozen dataclass of ``runtime.settings.setting``
   fields (upstream env names and flags); ``providers/<cloud>/__init__.py`` exports it as
   ``Settings`` with ``make_provider(settings, *, node_name)``, importing no SDK at module
   level.
2. ``providers/<cloud>/errors.py``: the error table, a :class:`providers.kit.ErrorTable`
   (or a function of the same shape) from SDK exceptions to the :class:`ProviderError`
   subclasses below, and a ``classify`` function saying which exceptions to retry.
3. ``providers/<cloud>/provider.py``: the SDK calls. Run blocking calls on a
   :class:`providers.kit.BlockingCalls` pool through :class:`providers.kit.SdkCaller`
   (retry, rate limit, error translation), map tags with :class:`providers.kit.TagMap`,
   map the cloud's states with an :class:`InstanceState` table, and refuse the spec fields
   the cloud cannot honour with :func:`providers.kit.refuse_unsupported`.
4. ``providers/registry.py``: one :class:`providers.registry.ProviderEntry` line, and the
   SDK as an extra in ``pyproject.toml``.
5. ``tests/providers/test_contract.py``: one factory in ``FACTORIES`` that builds the provider
   against the cloud's loopback fake or emulator; the whole contract suite then runs on it.

Cancellation is owned by the adaptor alone: see :meth:`Provider.create_instance`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
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
    (0 when absent); so are ``gpus`` and ``gpu_model``. ``image`` is the image override
    annotation, ``None`` when absent. ``multi_nic`` asks for a second NIC
    (``EXTERNAL_NETWORK_VIA_PODVM``). ``volumes`` are the disk ids of the pod's CSI block
    volumes, in LUN order (volume N is the annotation's ``vol-N``): a provider that
    honours them attaches each one to the VM before ``create_instance`` returns, and leaves
    the disks intact (detached) when the instance is deleted.

    A provider honours every field that differs from its default, or refuses the request
    with :class:`InvalidSpec` naming the field (:func:`providers.kit.refuse_unsupported`).
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
    """One pod VM to create. The name and user-data are made by the adaptor, never invented.

    ``tags`` are the logical tags (:func:`adaptor_tags`); the provider maps them to its
    cloud's keys and back in one place (:class:`providers.kit.TagMap`).
    """

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


class InstanceState(StrEnum):
    """The one set of instance states; every provider maps its cloud's words to these."""

    PENDING = "pending"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    TERMINATED = "terminated"  # gone or going (shutting down); never listed
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Instance:
    """A pod VM as the cloud reports it.

    ``created_at`` (timezone-aware) lets the orphan sweep honour its grace period; ``None``
    when the cloud does not tell, in which case the sweep treats the instance as old.
    ``tags`` carry the logical keys and values the instance was created with.
    """

    id: str
    name: str
    ips: tuple[IPAddress, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    created_at: datetime | None = None
    state: InstanceState = InstanceState.UNKNOWN


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
    """One cloud. Constructors only store settings; network calls happen in methods.

    Every error leaving a method is a :class:`ProviderError`; SDK exceptions never do.
    """

    name: str

    async def create_instance(self, request: InstanceRequest) -> Instance:
        """Create and boot one pod VM named ``request.name``, tagged with ``request.tags``.

        Postcondition: the VM exists, is booting or running, ``ips`` is non-empty and
        ``tags`` holds ``request.tags`` (logical keys). Idempotent per ``sandbox_id`` while
        the instance exists: a second create for the same sandbox (a retry, a restarted
        adaptor) returns that same instance and makes no other. After the sandbox's instance
        was deleted, a create makes a new instance (``request.attempt`` tells creations of
        one sandbox apart; a cloud idempotency token is derived from it), never the deleted
        one. Spec fields the provider cannot honour raise :class:`InvalidSpec` before
        anything is made. On failure (an exception), everything this call made has been
        released, as far as the cloud let it (what a failed release leaves carries the
        request's tags, so the orphan sweep finds it).

        Cancellation belongs to the adaptor: it runs this call in a task of its own, shields
        it from its callers, and when a caller gives up it awaits the result and deletes the
        instance itself. A provider may therefore assume the call runs to completion and
        needs no shield, orphan queue or background task of its own. Should the task be
        cancelled anyway (the event loop closing), the provider releases what it already
        knows of, without waiting for a blocking call in flight; whatever that call still
        makes carries the request's tags (or, for resources without tags, its name), so the
        orphan sweep or the next create of that name removes it.
        """
        ...

    async def delete_instance(self, instance_id: str) -> None:
        """Delete the VM and its provider-side extras.

        Postcondition: the instance is gone or going, and no longer listed. Deleting an
        instance twice, or an id the cloud never knew, succeeds.
        """
        ...

    async def list_instances(self, tags: Mapping[str, str]) -> list[Instance]:
        """The live instances carrying every one of ``tags`` (logical keys; ``{}``: all the
        provider's instances).

        Postcondition: each result's ``tags`` holds every given key with the given value;
        deleted (terminated) instances are not listed.
        """
        ...

    async def instance_types(self) -> InstanceTypeCatalogue | None:
        """The instance-type catalogue, or ``None`` when this cloud has no instance types.

        Postcondition: creates nothing; every type in ``specs`` is in ``allowed`` or, without
        an allow-list, is ``default``.
        """
        ...

    async def verify_config(self) -> None:
        """Check the settings and that the cloud resources they name exist.

        Postcondition: returns when a create could work; raises :class:`ConfigError`
        saying what is wrong otherwise. Creates nothing.
        """
        ...

    async def aclose(self) -> None:
        """Release clients, connections and threads. Calling it twice is fine; instances are
        left as they are (they belong to the sandboxes, not to this object)."""
        ...


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
