"""What the loopback Compute endpoint knows (images, networks, machine types, tags) and the
checks GCE makes on an instances.insert body."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

NAME = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
LABEL = re.compile(r"[a-z0-9_-]{0,63}")
INSTANCE_FIELDS = {
    "name", "machineType", "disks", "metadata", "networkInterfaces", "labels", "scheduling",
    "confidentialInstanceConfig", "params", "description", "tags", "serviceAccounts",
    "shieldedInstanceConfig", "guestAccelerators",
}
DISK_FIELDS = {"boot", "autoDelete", "type", "initializeParams", "deviceName", "mode", "source"}
INIT_FIELDS = {"sourceImage", "diskSizeGb", "diskType", "labels"}
NIC_FIELDS = {"network", "subnetwork", "accessConfigs", "stackType", "networkIP", "nicType"}
STACK_TYPES = {"IPV4_ONLY", "IPV4_IPV6", "IPV6_ONLY"}
DISK_TYPES = {"pd-standard", "pd-balanced", "pd-ssd", "pd-extreme", "hyperdisk-balanced"}
# The machine families each confidential type runs on (Compute Engine's documented list,
# reduced to the families this endpoint serves).
CONFIDENTIAL_FAMILIES = {"TDX": ("c3",), "SEV": ("n2d", "c2d", "c3d"), "SEV_SNP": ("n2d",)}


class Invalid(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


def _bad(field_name: str, value: Any) -> Invalid:
    return Invalid(400, "invalid", f"Invalid value for field '{field_name}': '{value}'.")


def _unknown(names: set[str], where: str) -> None:
    if names:
        name = sorted(names)[0]
        raise Invalid(400, "badRequest", f'Invalid JSON payload received. Unknown name "{name}" '
                      f"at '{where}': Cannot find field.")


@dataclass
class Catalogue:
    project: str
    zone: str
    images: dict[str, int] = field(default_factory=lambda: {
        "podvm-image": 12, "podvm-big": 30})
    families: dict[str, str] = field(default_factory=lambda: {"podvm": "podvm-image"})
    networks: set[str] = field(default_factory=lambda: {"default", "pods"})
    subnetworks: set[str] = field(default_factory=lambda: {"pods-subnet"})
    machine_types: dict[str, tuple[int, int, int]] = field(default_factory=lambda: {
        # name: (vCPUs, memory MiB, GPUs)
        "e2-medium": (2, 4096, 0),
        "e2-standard-4": (4, 16384, 0),
        "n2d-standard-2": (2, 8192, 0),
        "n2d-standard-4": (4, 16384, 0),
        "c3-standard-4": (4, 16384, 0),
        "g2-standard-4": (4, 16384, 1),
        "a2-highgpu-2g": (24, 174080, 2),
    })
    resource_tags: dict[str, set[str]] = field(default_factory=dict)  # "<proj>/<key>": values

    @property
    def region(self) -> str:
        return self.zone.rsplit("-", 1)[0]

    def _not_found(self, path: str) -> Invalid:
        return Invalid(404, "notFound", f"The resource '{path}' was not found")

    def image(self, name: str) -> dict[str, Any]:
        if name not in self.images:
            raise self._not_found(f"projects/{self.project}/global/images/{name}")
        return {"kind": "compute#image", "name": name, "id": str(abs(hash(name)) % 10**18),
                "diskSizeGb": str(self.images[name]), "status": "READY"}

    def image_family(self, family: str) -> dict[str, Any]:
        if family not in self.families:
            raise self._not_found(f"projects/{self.project}/global/images/family/{family}")
        return self.image(self.families[family])

    def network(self, name: str) -> dict[str, Any]:
        if name not in self.networks:
            raise self._not_found(f"projects/{self.project}/global/networks/{name}")
        return {"kind": "compute#network", "name": name, "autoCreateSubnetworks": True}

    def subnetwork(self, region: str, name: str) -> dict[str, Any]:
        if region != self.region or name not in self.subnetworks:
            raise self._not_found(f"projects/{self.project}/regions/{region}/subnetworks/{name}")
        return {"kind": "compute#subnetwork", "name": name, "ipCidrRange": "10.128.0.0/20"}

    def machine_type_json(self, name: str) -> dict[str, Any]:
        if name not in self.machine_types:
            raise self._not_found(
                f"projects/{self.project}/zones/{self.zone}/machineTypes/{name}")
        vcpus, memory, gpus = self.machine_types[name]
        answer: dict[str, Any] = {"kind": "compute#machineType", "name": name,
                                  "guestCpus": vcpus, "memoryMb": memory, "zone": self.zone}
        if gpus:
            answer["accelerators"] = [{"guestAcceleratorType": "nvidia-l4",
                                       "guestAcceleratorCount": gpus}]
        return answer

    def network_url(self, value: str, base: str) -> str:
        return f"{base}/compute/v1/projects/{self.project}/global/networks/{value.split('/')[-1]}"

    def resolve(self, value: str, kind: str) -> str:
        """The name at the end of a reference, checked to be in this project."""
        parts = [p for p in value.split("/") if p]
        if "projects" in parts[:-1] and parts[parts.index("projects") + 1] != self.project:
            raise self._not_found(value)
        if kind in parts[:-1] or len(parts) == 1:
            return parts[-1]
        raise _bad(kind, value)


def check_insert(body: Any, cat: Catalogue) -> None:
    """Raise :class:`Invalid` as GCE does for an insert body it refuses."""
    if not isinstance(body, dict):
        raise Invalid(400, "parseError", "Parse Error")
    _unknown(set(body) - INSTANCE_FIELDS, "instance")
    for required in ("name", "machineType", "disks", "networkInterfaces"):
        if not body.get(required):
            raise Invalid(400, "required", f"Required field 'resource.{required}' not specified")
    if not NAME.fullmatch(body["name"]):
        raise _bad("resource.name", body["name"])
    machine = cat.resolve(body["machineType"], "machineTypes")
    if machine not in cat.machine_types:
        raise _bad("resource.machineType", body["machineType"])
    _check_disks(body["disks"], machine, cat)
    _check_nics(body["networkInterfaces"], cat)
    _check_confidential(body, machine, cat)
    for key, value in (body.get("labels") or {}).items():
        if not (LABEL.fullmatch(key) and key[:1].isalpha() and LABEL.fullmatch(value)):
            raise _bad(f"labels.{key}", value)
    keys = [i.get("key") for i in (body.get("metadata") or {}).get("items", ())]
    if len(keys) != len(set(keys)):
        raise Invalid(400, "invalid", "Metadata has duplicate keys.")
    for key, value in ((body.get("params") or {}).get("resourceManagerTags") or {}).items():
        if value not in cat.resource_tags.get(key, set()):
            raise Invalid(400, "invalid", f"Invalid resource manager tag: {key}={value} does "
                          "not exist or the caller lacks permission to use it.")


def _check_disks(disks: list[dict[str, Any]], machine: str, cat: Catalogue) -> None:
    boots = [d for d in disks if d.get("boot")]
    if len(boots) != 1:
        raise Invalid(400, "invalid", "Exactly one boot disk must be specified.")
    for disk in disks:
        _unknown(set(disk) - DISK_FIELDS, "instance.disks[0]")
        init = disk.get("initializeParams") or {}
        _unknown(set(init) - INIT_FIELDS, "instance.disks[0].initializeParams")
        if disk.get("type", "PERSISTENT") not in ("PERSISTENT", "SCRATCH"):
            raise _bad("resource.disks[0].type", disk.get("type"))
        source = init.get("sourceImage", "")
        parts = [p for p in source.split("/") if p]
        if "family" in parts[:-1]:
            size = cat.images[cat.image_family(parts[-1])["name"]]
        else:
            size = int(cat.image(cat.resolve(source, "images"))["diskSizeGb"])
        raw = init.get("diskSizeGb", str(size))
        if not isinstance(raw, str) or not raw.isdigit():  # int64 travels as a string
            raise _bad("resource.disks[0].initializeParams.diskSizeGb", raw)
        if int(raw) < size:
            raise Invalid(400, "invalid", f"Requested disk size cannot be smaller than the "
                          f"image size ({size} GB)")
        disk_type = cat.resolve(init.get("diskType", "pd-standard"), "diskTypes")
        if disk_type not in DISK_TYPES:
            raise _bad("resource.disks[0].initializeParams.diskType", disk_type)
        if disk_type == "pd-standard" and machine.startswith("c3-"):
            raise Invalid(400, "invalid", "[pd-standard] features are not compatible for "
                          "creating instance.")


def _check_nics(nics: list[dict[str, Any]], cat: Catalogue) -> None:
    for n, nic in enumerate(nics):
        _unknown(set(nic) - NIC_FIELDS, f"instance.networkInterfaces[{n}]")
        if nic.get("network"):
            cat.network(cat.resolve(nic["network"], "networks"))
        if nic.get("subnetwork"):
            parts = [p for p in nic["subnetwork"].split("/") if p]
            if "regions" not in parts:
                raise _bad(f"resource.networkInterfaces[{n}].subnetwork", nic["subnetwork"])
            cat.subnetwork(parts[parts.index("regions") + 1],
                           cat.resolve(nic["subnetwork"], "subnetworks"))
        stack = nic.get("stackType", "IPV4_ONLY")
        if stack not in STACK_TYPES:
            raise _bad(f"resource.networkInterfaces[{n}].stackType", stack)
        for access in nic.get("accessConfigs", ()):
            if access.get("type", "ONE_TO_ONE_NAT") != "ONE_TO_ONE_NAT" or access.get(
                    "networkTier", "PREMIUM") not in ("PREMIUM", "STANDARD"):
                raise _bad(f"resource.networkInterfaces[{n}].accessConfigs[0]", access)


def _check_confidential(body: dict[str, Any], machine: str, cat: Catalogue) -> None:
    terminate = (body.get("scheduling") or {}).get("onHostMaintenance") == "TERMINATE"
    config = body.get("confidentialInstanceConfig")
    if config:
        kind = config.get("confidentialInstanceType", "")
        if kind not in CONFIDENTIAL_FAMILIES or not config.get("enableConfidentialCompute"):
            raise _bad("resource.confidentialInstanceConfig", config)
        if not machine.startswith(tuple(f + "-" for f in CONFIDENTIAL_FAMILIES[kind])):
            raise Invalid(400, "invalid", f"Confidential Instance Config {kind} is not "
                          f"supported for machine type {machine}.")
        if not terminate:
            raise Invalid(400, "invalid", "Instances with confidential compute enabled must "
                          "have onHostMaintenance set to TERMINATE.")
    if cat.machine_types[machine][2] and not terminate:
        raise Invalid(400, "invalid", "Instances with guest accelerators do not support live "
                      "migration.")
