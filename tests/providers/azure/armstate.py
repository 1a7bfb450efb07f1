"""The state of the loopback ARM endpoint: resources, long-running operations, faults.

Resources are stored as the JSON ARM returns. What ARM checks on a VM PUT is checked here
too (:func:`check_vm_body`); a VM makes its NIC (and public IP) and OS disk, and deletes
them with it when their ``deleteOption`` says so.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from ipaddress import IPv4Network
from typing import Any

COMPUTE_API = "2026-04-01"
SKUS_API = "2021-07-01"
DISKS_API = "2026-03-02"
GALLERY_API = "2026-03-03"
NETWORK_API = "2026-03-01"
USER_DATA_LIMIT = 64 * 1024


class ArmError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


@dataclass(frozen=True)
class Size:
    name: str
    vcpus: int
    memory_mib: int
    confidential: str = ""  # "SNP", "TDX" or "" (ConfidentialComputingType)
    gpus: int = 0


SIZES = (
    Size("Standard_DC2as_v5", 2, 8192, "SNP"),
    Size("Standard_DC4as_v5", 4, 16384, "SNP"),
    Size("Standard_DC8as_v5", 8, 32768, "SNP"),
    Size("Standard_DC2es_v5", 2, 8192, "TDX"),
    Size("Standard_D2as_v5", 2, 8192),
    Size("Standard_NC4as_T4_v3", 4, 28672, "", 1),
)


MAX_DATA_DISKS = 4  # every size's maxDataDiskCount here


@dataclass
class Faults:
    operation_polls: int = 2  # in-progress answers before an operation ends
    operation_seconds: float = 0.0  # and at least this long (injected latency)
    throttle_next: int = 0  # answer that many ARM requests with 429 Retry-After
    retry_after: str = "1"
    quota_sizes: set[str] = field(default_factory=set)  # 409 OperationNotAllowed on PUT
    unavailable_sizes: set[str] = field(default_factory=set)  # 409 SkuNotAvailable on PUT
    fail_operation: str = ""  # the next VM create operation ends Failed with this code
    poll_after_ms: int = 0  # when set, operations answer with this retry-after-ms


@dataclass
class Operation:
    id: str
    started: float
    polls_left: int
    seconds: float
    error: tuple[str, str] | None = None
    on_done: Any = None  # callable run once when the operation ends

    def poll(self) -> dict[str, Any]:
        if self.polls_left > 0 or time.monotonic() - self.started < self.seconds:
            self.polls_left -= 1
            return {"name": self.id, "status": "InProgress"}
        if self.on_done is not None:
            done, self.on_done = self.on_done, None
            done()
        if self.error:
            code, message = self.error
            return {"name": self.id, "status": "Failed",
                    "error": {"code": code, "message": message}}
        return {"name": self.id, "status": "Succeeded"}


@dataclass
class ArmState:
    subscription: str
    resource_group: str
    region: str
    subnet_cidr: str = "10.1.0.0/24"
    tenant: str = "tenant-1"
    client_id: str = "client-1"
    client_secret: str = "s3cret-" + uuid.uuid4().hex
    page_size: int = 50
    faults: Faults = field(default_factory=Faults)
    vms: dict[str, dict[str, Any]] = field(default_factory=dict)
    nics: dict[str, dict[str, Any]] = field(default_factory=dict)
    public_ips: dict[str, dict[str, Any]] = field(default_factory=dict)
    disks: dict[str, dict[str, Any]] = field(default_factory=dict)
    images: set[str] = field(default_factory=set)  # lower-cased ids
    subnets: set[str] = field(default_factory=set)
    nsgs: set[str] = field(default_factory=set)
    operations: dict[str, Operation] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)
    vm_bodies: list[dict[str, Any]] = field(default_factory=list)  # every PUT body
    user_data: dict[str, str] = field(default_factory=dict)  # VM name -> base64 user data
    # Called when a VM's create operation succeeded, and when a VM is gone (the world of
    # the adaptor test boots and retires its stand-in VMs there).
    on_vm_ready: Any = None
    on_vm_removed: Any = None
    _addresses: Any = None
    _public: Any = None

    def __post_init__(self) -> None:
        hosts = IPv4Network(self.subnet_cidr).hosts()
        self._addresses = itertools.islice(hosts, 4, None)  # Azure keeps .1-.3
        self._public = (f"20.30.{i // 250}.{i % 250 + 1}" for i in itertools.count())

    # ------------------------------------------------------------------ ids

    def rg_id(self, rg: str | None = None) -> str:
        return f"/subscriptions/{self.subscription}/resourceGroups/{rg or self.resource_group}"

    def resource_id(self, provider: str, kind: str, name: str) -> str:
        return f"{self.rg_id()}/providers/{provider}/{kind}/{name}"

    def add_subnet(self, vnet: str = "vnet-1", subnet: str = "pods") -> str:
        sid = self.resource_id("Microsoft.Network", "virtualNetworks", vnet) + \
            f"/subnets/{subnet}"
        self.subnets.add(sid.lower())
        return sid

    # ----------------------------------------------------------- operations

    def operation(self, on_done: Any = None, error: tuple[str, str] | None = None) -> Operation:
        op = Operation(uuid.uuid4().hex, time.monotonic(), self.faults.operation_polls,
                       self.faults.operation_seconds, error, on_done)
        self.operations[op.id] = op
        return op

    # ------------------------------------------------------------------ VMs

    def put_vm(self, name: str, body: dict[str, Any]) -> tuple[dict[str, Any], Operation]:
        self.vm_bodies.append(body)
        if name.lower() in self.vms:
            vm = self.vms[name.lower()]
            return vm, self.operation()
        props = check_vm_body(self, body)
        size = props["hardwareProfile"]["vmSize"]
        if size in self.faults.quota_sizes:
            raise ArmError(409, "OperationNotAllowed", f"Operation could not be completed as it "
                           f"results in exceeding approved standardDCASv5Family Cores quota "
                           f"(size {size}, location {self.region})")
        if size in self.faults.unavailable_sizes:
            raise ArmError(409, "SkuNotAvailable", f"The requested VM size {size} is currently "
                           f"not available in location '{self.region}'")
        vm_id = self.resource_id("Microsoft.Compute", "virtualMachines", name)
        data_disks = self._data_disks(props, size, vm_id)
        nic_refs = [self._make_nic(config, vm_id) for config in
                    props["networkProfile"]["networkInterfaceConfigurations"]]
        self._make_disk(props["storageProfile"]["osDisk"], vm_id)
        for spec, disk in data_disks:
            disk["managedBy"] = vm_id
            disk["deleteOption"] = spec.get("deleteOption", "Detach")
            disk["properties"]["diskState"] = "Attached"
        stored = dict(props)
        stored.pop("userData", None)  # ARM does not return it without $expand=userData
        stored["networkProfile"] = dict(stored["networkProfile"], networkInterfaces=nic_refs)
        stored["provisioningState"] = "Creating"
        stored["vmId"] = str(uuid.uuid4())
        stored["timeCreated"] = datetime.now(UTC).isoformat()
        vm = {"id": vm_id, "name": name, "type": "Microsoft.Compute/virtualMachines",
              "location": body["location"], "tags": body.get("tags") or {},
              "properties": stored}
        self.vms[name.lower()] = vm
        self.user_data[name.lower()] = props.get("userData") or props["osProfile"].get(
            "customData", "")
        error = None
        if self.faults.fail_operation:
            error = (self.faults.fail_operation, "Allocation failed. We do not have sufficient "
                     "capacity for the requested VM size in this region.")
            self.faults.fail_operation = ""

        def done() -> None:
            vm["properties"]["provisioningState"] = "Failed" if error else "Succeeded"
            if not error and self.on_vm_ready is not None:
                self.on_vm_ready(vm, self.user_data[name.lower()])

        return vm, self.operation(done, error)

    def add_disk(self, name: str, *, location: str | None = None, size_gb: int = 4) -> str:
        """A managed disk, unattached (what a CSI driver's CreateVolume leaves)."""
        disk_id = self.resource_id("Microsoft.Compute", "disks", name)
        self.disks[name.lower()] = {
            "id": disk_id, "name": name, "type": "Microsoft.Compute/disks",
            "location": location or self.region,
            "properties": {"diskSizeGB": size_gb, "diskState": "Unattached"}}
        return disk_id

    def _data_disks(
        self, props: dict[str, Any], size: str, vm_id: str
    ) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """ARM's checks of the body's data disks (createOption Attach): the disks to attach."""
        found = []
        luns: set[int] = set()
        for spec in props["storageProfile"].get("dataDisks") or []:
            lun = int(spec["lun"])
            if lun in luns or not 0 <= lun < MAX_DATA_DISKS:
                raise ArmError(400, "InvalidParameter", f"LUN {lun} is invalid or used twice")
            luns.add(lun)
            if spec.get("createOption") != "Attach":
                raise ArmError(400, "InvalidParameter", "only createOption Attach is served")
            disk_id = _need(spec, "managedDisk", "id")
            disk = self.disks.get(disk_id.rsplit("/", 1)[-1].lower())
            if disk is None or disk["id"].lower() != disk_id.lower():
                raise ArmError(404, "NotFound", f"Resource {disk_id} was not found.")
            if disk.get("managedBy"):
                raise ArmError(409, "OperationNotAllowed", f"Disk {disk['name']} is already "
                               f"attached to VM {disk['managedBy']}.")
            if disk.get("location", self.region).lower() != self.region.lower():
                raise ArmError(400, "BadRequest", f"disk {disk_id} is in another region")
            found.append((spec, disk))
        if len(found) > MAX_DATA_DISKS:
            raise ArmError(409, "OperationNotAllowed", f"The maximum number of data disks "
                           f"allowed to be attached to a VM of this size ({size}) is "
                           f"{MAX_DATA_DISKS}.")
        return found

    def _make_nic(self, config: dict[str, Any], vm_id: str) -> dict[str, Any]:
        name = config["name"]
        if name.lower() in self.nics:
            raise ArmError(409, "Conflict", f"network interface {name} already exists")
        cprops = config.get("properties") or {}
        ip_configs = []
        for ipc in cprops.get("ipConfigurations") or []:
            ipprops = ipc.get("properties") or {}
            subnet = (ipprops.get("subnet") or {}).get("id", "")
            if subnet.lower() not in self.subnets:
                raise ArmError(404, "InvalidResourceReference",
                               f"Resource {subnet} referenced by resource {vm_id} was not found")
            out: dict[str, Any] = {"privateIPAddress": str(next(self._addresses)),
                                   "privateIPAllocationMethod": "Dynamic",
                                   "subnet": {"id": subnet}}
            pipc = ipprops.get("publicIPAddressConfiguration")
            if pipc:
                pip_name = f"{pipc['name']}-pip"
                pip_id = self.resource_id("Microsoft.Network", "publicIPAddresses", pip_name)
                self.public_ips[pip_name.lower()] = {
                    "id": pip_id, "name": pip_name, "deleteOption":
                    (pipc.get("properties") or {}).get("deleteOption", "Detach"),
                    "properties": {"ipAddress": next(self._public)}}
                out["publicIPAddress"] = {"id": pip_id}
            ip_configs.append({"name": ipc.get("name"), "properties": out})
        nsg = cprops.get("networkSecurityGroup")
        if nsg and nsg.get("id", "").lower() not in self.nsgs:
            raise ArmError(404, "InvalidResourceReference", f"{nsg.get('id')} not found")
        nic_id = self.resource_id("Microsoft.Network", "networkInterfaces", name)
        props: dict[str, Any] = {"ipConfigurations": ip_configs, "virtualMachine": {"id": vm_id},
                                 "provisioningState": "Succeeded"}
        if nsg:
            props["networkSecurityGroup"] = nsg
        self.nics[name.lower()] = {"id": nic_id, "name": name, "properties": props,
                                   "deleteOption": cprops.get("deleteOption", "Detach")}
        return {"id": nic_id, "properties": {"deleteOption": cprops.get("deleteOption")}}

    def _make_disk(self, os_disk: dict[str, Any], vm_id: str) -> None:
        name = os_disk.get("name") or f"{vm_id.rsplit('/', 1)[1]}_OsDisk"
        if name.lower() in self.disks:
            raise ArmError(409, "Conflict", f"disk {name} already exists")
        self.disks[name.lower()] = {
            "id": self.resource_id("Microsoft.Compute", "disks", name), "name": name,
            "managedBy": vm_id, "deleteOption": os_disk.get("deleteOption", "Detach"),
            "properties": {"diskSizeGB": os_disk.get("diskSizeGB", 30)}}

    def delete_vm(self, name: str) -> Operation | None:
        vm = self.vms.get(name.lower())
        if vm is None:
            return None
        vm["properties"]["provisioningState"] = "Deleting"
        return self.operation(lambda: self._remove_vm(vm))

    def _remove_vm(self, vm: dict[str, Any]) -> None:
        self.vms.pop(vm["name"].lower(), None)
        self.user_data.pop(vm["name"].lower(), None)
        if self.on_vm_removed is not None:
            self.on_vm_removed(vm)
        for table in (self.nics, self.disks, self.public_ips):
            for key, item in list(table.items()):
                owner = (item.get("managedBy")
                         or item.get("properties", {}).get("virtualMachine", {}).get("id"))
                mine = owner == vm["id"] or (table is self.public_ips and key.startswith(
                    tuple(f"{n.lower()}-" for n in self.nics_of(vm))))
                if mine and item.get("deleteOption") == "Delete":
                    table.pop(key)
                elif owner == vm["id"]:
                    item.pop("managedBy", None)
                    if "diskState" in item.get("properties", {}):
                        item["properties"]["diskState"] = "Unattached"
                    item.get("properties", {}).pop("virtualMachine", None)

    def nics_of(self, vm: dict[str, Any]) -> list[str]:
        refs = vm["properties"]["networkProfile"].get("networkInterfaces") or []
        return [ref["id"].rsplit("/", 1)[1] for ref in refs]

    def residue(self, name: str) -> set[str]:
        """What is left of the VM ``name``: itself, its NIC, public IP, OS disk."""
        prefix = name.lower()
        return {item["id"] for table in (self.vms, self.nics, self.disks, self.public_ips)
                for key, item in table.items() if key == prefix or key.startswith(prefix + "-")}


def _need(props: dict[str, Any], *path: str) -> Any:
    value: Any = props
    for key in path:
        if not isinstance(value, dict) or value.get(key) in (None, "", []):
            raise ArmError(400, "InvalidParameter",
                           f"Required parameter '{'.'.join(path)}' is missing (null).")
        value = value[key]
    return value


def check_vm_body(state: ArmState, body: dict[str, Any]) -> dict[str, Any]:
    """What ARM refuses in a VM PUT body, refused here with ARM's codes."""
    if body.get("location", "").lower() != state.region.lower():
        raise ArmError(400, "LocationRequired" if not body.get("location") else
                       "InvalidParameter", f"location {body.get('location')!r} is not "
                       f"the resource group's region {state.region}")
    props = _need(body, "properties")
    size = _need(props, "hardwareProfile", "vmSize")
    known = {s.name: s for s in SIZES}
    if size not in known:
        raise ArmError(400, "InvalidParameter", f"The value {size} of vmSize is not valid")
    image = _need(props, "storageProfile", "imageReference")
    image_id = image.get("id") or image.get("communityGalleryImageId") or ""
    if image_id.lower() not in state.images:
        raise ArmError(404, "ImageNotFound", f"The platform image '{image_id}' is not available")
    _need(props, "storageProfile", "osDisk", "createOption")
    _need(props, "osProfile", "computerName")
    _need(props, "osProfile", "adminUsername")
    keys = _need(props, "osProfile", "linuxConfiguration", "ssh", "publicKeys")
    if not all(str(k.get("keyData", "")).startswith("ssh-rsa ") for k in keys):
        raise ArmError(400, "InvalidParameter", "The value of parameter linuxConfiguration."
                       "ssh.publicKeys.keyData is invalid.")
    data = props.get("userData") or props["osProfile"].get("customData")
    if not data:
        raise ArmError(400, "InvalidParameter", "no userData or customData")
    try:
        base64.b64decode(data, validate=True)
    except binascii.Error as exc:
        raise ArmError(400, "InvalidParameter", "userData is not base64") from exc
    if len(data) > USER_DATA_LIMIT:
        raise ArmError(400, "InvalidParameter", "userData is more than 64 KB")
    _need(props, "networkProfile", "networkInterfaceConfigurations")
    _need(props, "networkProfile", "networkApiVersion")
    security = props.get("securityProfile") or {}
    if security.get("securityType") == "ConfidentialVM":
        if not known[size].confidential:
            raise ArmError(400, "BadRequest", f"The VM size '{size}' is not supported for "
                           "creation of VMs with Security Type ConfidentialVM.")
        if not (security.get("uefiSettings") or {}).get("vTpmEnabled"):
            raise ArmError(400, "BadRequest", "ConfidentialVM requires vTpmEnabled")
        _need(props, "storageProfile", "osDisk", "managedDisk", "securityProfile",
              "securityEncryptionType")
    return props
