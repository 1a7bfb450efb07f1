"""Pure builders: the instances.insert body out of a request, Instance values out of GCE data.

Logical tags become GCE labels (lower-case keys and values of ``[a-z0-9_-]``, 63 characters at
most), which ``instances.list`` filters by. A label value cannot hold every tag value (a
sandbox id is 64 characters, node names may hold dots), so a value that does not fit is
stored as a readable prefix plus a digest, and the exact logical tags travel in the
``peerpods-tags`` metadata item, from which they are read back.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from ipaddress import ip_address
from typing import Any

from google.cloud import compute_v1

from providers.base import Instance, InstanceRequest, InstanceState, IPAddress, ProviderError
from providers.gcp.settings import GcpSettings
from providers.kit import TagMap, instance_tags, label_key, matches
from providers.kit import state_of as kit_state

TAGS_METADATA_KEY = "peerpods-tags"
USER_DATA_KEY = "user-data"
LABEL_MAX = 63
DIGEST_CHARS = 16
_LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")
_UNSAFE = re.compile(r"[^a-z0-9_-]")
IMAGE_PREFIXES = ("projects/", "/projects", "https")
SUBNETWORK_PREFIXES = ("projects/", "/projects", "regions/", "https")
# Instance.status words. TERMINATED is GCE's word for a stopped instance; a deleted one is
# simply gone (404, not listed).
STATES = {
    "PROVISIONING": InstanceState.PENDING,
    "STAGING": InstanceState.PENDING,
    "RUNNING": InstanceState.RUNNING,
    "STOPPING": InstanceState.STOPPING,
    "SUSPENDING": InstanceState.STOPPING,
    "SUSPENDED": InstanceState.STOPPED,
    "TERMINATED": InstanceState.STOPPED,
}
# States of an instance a create for its sandbox may hand out again.
ALIVE_STATES = frozenset({"PROVISIONING", "STAGING", "RUNNING"})
REQUEST_ID_NAMESPACE = uuid.UUID("6f0e3a52-2f57-4d55-9f43-9bd1c1b8d6a1")


def label_value(value: str) -> str:
    """A tag value as a label value: as it is when it fits, else a readable prefix and a
    digest (deterministic, so that ``instances.list`` filters on it)."""
    if _LABEL_VALUE.fullmatch(value):
        return value
    digest = hashlib.sha256(value.encode("utf-8")).hexdigest()[:DIGEST_CHARS]
    prefix = _UNSAFE.sub("-", value.lower())[: LABEL_MAX - DIGEST_CHARS - 2]
    return f"{prefix}--{digest}"


# Keys: kit.label_key; values: label_value. Logical values come back from the metadata item.
LABELS = TagMap(key=label_key, value=label_value)


def request_id(sandbox_id: str, attempt: int) -> str:
    """The insert's idempotency token (a UUID, as GCE requires) for one creation of a
    sandbox: a retried insert is answered with the first one's operation."""
    return str(uuid.uuid5(REQUEST_ID_NAMESPACE, f"{sandbox_id}/{attempt}"))


def source_image(image: str, project: str) -> str:
    """Upstream's expansion: paths and URLs as they are, a bare name in the project."""
    if image.startswith(IMAGE_PREFIXES):
        return image
    return f"projects/{project}/global/images/{image}"


@dataclass(frozen=True, slots=True)
class ImageRef:
    project: str
    name: str
    family: bool = False


def image_ref(image: str, project: str) -> ImageRef:
    """Project and name (or family) of an image path, for images.get."""
    parts = [p for p in image.split("/") if p]
    if "images" in parts:
        at = parts.index("images")
        owner = parts[at - 2] if at >= 2 and parts[at - 2 - 1: at - 2] == ["projects"] else ""
        rest = parts[at + 1:]
        if len(rest) == 2 and rest[0] == "family":
            return ImageRef(owner or project, rest[1], family=True)
        if rest:
            return ImageRef(owner or project, rest[-1])
    return ImageRef(project, parts[-1] if parts else image)


def subnetwork_path(settings: GcpSettings) -> str:
    """Upstream's expansion of ``GCP_SUBNETWORK`` (empty when not set)."""
    name = settings.subnetwork
    if not name or name.startswith(SUBNETWORK_PREFIXES) or not settings.region:
        return name
    return f"projects/{settings.project_id}/regions/{settings.region}/subnetworks/{name}"


def owner_and_name(path: str, project: str) -> tuple[str, str]:
    """The project a resource path names (else ``project``) and its last part."""
    parts = [p for p in path.split("/") if p]
    owner = parts[parts.index("projects") + 1] if "projects" in parts[:-1] else project
    return owner, parts[-1] if parts else path


def resource_manager_tags(settings: GcpSettings) -> dict[str, str]:
    """``TAGS`` as resource-manager tags in namespaced form (``<project>/<key>``: value), or
    as given when the key already names its parent or a ``tagKeys/`` id."""
    return {
        (key if "/" in key else f"{settings.project_id}/{key}"): value
        for key, value in settings.resource_tags.items()
    }


def insert_body(
    request: InstanceRequest,
    settings: GcpSettings,
    *,
    image: str,
    machine_type: str,
    disk_gib: int,
    node_tags: Mapping[str, str],
) -> compute_v1.Instance:
    """The ``Instance`` resource of instances.insert, as upstream builds it, plus labels."""
    zone = settings.zone
    tags = instance_tags(request, defaults=node_tags)
    nic = compute_v1.NetworkInterface(network=settings.network, stack_type="IPV4_ONLY")
    subnetwork = subnetwork_path(settings)
    if subnetwork:
        nic.subnetwork = subnetwork
    if settings.use_public_ip:
        nic.access_configs = [compute_v1.AccessConfig(
            name="External NAT", network_tier="STANDARD", type_="ONE_TO_ONE_NAT",
        )]
    body = compute_v1.Instance(
        name=request.name,
        machine_type=f"zones/{zone}/machineTypes/{machine_type}",
        disks=[compute_v1.AttachedDisk(
            boot=True, auto_delete=True, type_="PERSISTENT",
            initialize_params=compute_v1.AttachedDiskInitializeParams(
                source_image=image, disk_size_gb=disk_gib,
                disk_type=f"zones/{zone}/diskTypes/{settings.disk_type}",
            ),
        )],
        metadata=compute_v1.Metadata(items=[
            compute_v1.Items(key=USER_DATA_KEY,
                             value=base64.b64encode(request.user_data).decode("ascii")),
            compute_v1.Items(key="user-data-encoding", value="base64"),
            compute_v1.Items(key=TAGS_METADATA_KEY,
                             value=json.dumps(tags, sort_keys=True, separators=(",", ":"))),
        ]),
        network_interfaces=[nic],
        labels=LABELS.to_cloud(tags),
    )
    if not settings.disable_cvm:
        body.confidential_instance_config = compute_v1.ConfidentialInstanceConfig(
            confidential_instance_type=settings.confidential_type,
            enable_confidential_compute=True,
        )
    if not settings.disable_cvm or request.spec.gpus > 0:
        body.scheduling = compute_v1.Scheduling(on_host_maintenance="TERMINATE")
    rm_tags = resource_manager_tags(settings)
    if rm_tags:
        body.params = compute_v1.InstanceParams(resource_manager_tags=rm_tags)
    return body


def label_filter(tags: Mapping[str, str]) -> str:
    """The instances.list filter for ``tags`` (logical), ANDed ``labels.KEY="VALUE"``."""
    return " AND ".join(
        f'labels.{key}="{value}"' for key, value in sorted(LABELS.to_cloud(tags).items())
    )


class AddressNotReady(ProviderError):
    """The instance reported no usable address."""


def addresses(instance: compute_v1.Instance, *, public: bool) -> tuple[IPAddress, ...]:
    """``networkIP`` per NIC, or the NAT IPs when public (upstream's getIPs); strict."""
    raw: list[str] = []
    for nic in instance.network_interfaces:
        if public:
            raw.extend(access.nat_i_p for access in nic.access_configs)
        else:
            raw.append(nic.network_i_p)
    ips: list[IPAddress] = []
    for value in raw:
        try:
            ips.append(ip_address(value))
        except ValueError:
            raise AddressNotReady(
                f"instance {instance.name}: address not ready ({value or 'empty'})"
            ) from None
    if not ips:
        raise AddressNotReady(f"instance {instance.name}: no address")
    return tuple(ips)


def metadata_value(instance: compute_v1.Instance, key: str) -> str | None:
    for item in instance.metadata.items:
        if item.key == key:
            return item.value
    return None


def tags_of(instance: compute_v1.Instance, logical_keys: Sequence[str] = ()) -> dict[str, str]:
    """The logical tags: from the metadata item when present, else the labels as stored."""
    raw = metadata_value(instance, TAGS_METADATA_KEY)
    if raw:
        try:
            found = json.loads(raw)
        except ValueError:
            found = None
        if isinstance(found, dict):
            return {str(k): str(v) for k, v in found.items()}
    return LABELS.from_cloud(dict(instance.labels), logical_keys)


def carries(instance: compute_v1.Instance, wanted: Mapping[str, str]) -> bool:
    return matches(tags_of(instance), wanted)


def created_at(instance: compute_v1.Instance) -> datetime | None:
    try:
        return datetime.fromisoformat(instance.creation_timestamp)
    except ValueError:
        return None


def to_instance(
    instance: compute_v1.Instance, *, public: bool, strict: bool = False
) -> Instance:
    """An :class:`Instance` (id: GCE's numeric id, which the API takes wherever a name goes)."""
    try:
        ips = addresses(instance, public=public)
    except AddressNotReady:
        if strict:
            raise
        ips = ()
    return Instance(
        id=str(instance.id),
        name=instance.name,
        ips=ips,
        tags=tags_of(instance),
        created_at=created_at(instance),
        state=kit_state(instance.status, STATES),
    )


def describe_operation_error(operation: Any) -> list[tuple[str, str]]:
    """(code, message) of each error of a finished zone operation."""
    return [(e.code, e.message) for e in operation.error.errors]
