"""The sandbox record: what the adaptor keeps about one pod VM, as a frozen value of typed
fields (the pod network, the instance, the VXLAN id inside the pod network, the attempt).

Records are JSON-serialisable (``to_json`` / ``from_json``) so that the state store can keep
them across restarts. Version 2 is written (``peerpod`` was added to it later: a record
without it reads as having none, and an older reader ignores it); version 1 (which kept the
pod VM's ``apf.json`` text instead of the pod network) is still read, so that a rolling
update loses no pod. A
record carries the rendered user-data, which holds the VM's TLS server key: whoever persists
it must write it with mode 0600.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from adaptor.states import SandboxState, State, loaded, recorded
from protocols import apf
from protocols.apf import PodNetwork
from providers.base import InstanceSpec

SOCKET_NAME = "agent.ttrpc"
APF_COPY_NAME = "apf.json"
RECORD_VERSION = 2
READABLE_VERSIONS = (1, 2)


def request_fingerprint(
    sandbox_id: str, annotations: Mapping[str, str], netns_path: str
) -> str:
    """Identifies a CreateVM request, so that an identical retry is recognised."""
    body = json.dumps(
        [sandbox_id, sorted(annotations.items()), netns_path], separators=(",", ":")
    )
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class SandboxRecord:
    sandbox_id: str
    pod_name: str
    pod_namespace: str
    netns_path: str
    instance_name: str
    socket_path: str
    spec: InstanceSpec
    pod_network: PodNetwork | None  # None: no pod network (tunnel type "none" on the VM)
    user_data: str  # the rendered #cloud-config; never logged
    fingerprint: str
    state: SandboxState = SandboxState.CREATED
    instance_id: str = ""
    instance_ips: tuple[str, ...] = ()
    tunnel: bool = False  # the worker end of the tunnel may exist
    attempt: int = 0  # InstanceRequest.attempt of the next (or current) creation
    server_name: str = ""  # TLS name the forwarder's certificate must carry ("" without TLS)
    peerpod: str = ""  # the instance's PeerPod object, to release after the delete ("": none)
    extra: Mapping[str, str] = field(default_factory=dict)

    def replace(self, **changes: Any) -> SandboxRecord:
        return dataclasses.replace(self, **changes)

    @property
    def vxlan_id(self) -> int:
        return self.pod_network.vxlan_id if self.pod_network is not None else 0

    def machine_state(self) -> State:
        # A StartVM writes no record between building the tunnel and RUNNING: a ``starting``
        # record with an instance may have a tunnel (tearing it down again is harmless).
        tunnel = self.tunnel or (self.state is SandboxState.STARTING and bool(self.instance_id))
        return loaded(self.state, instance=bool(self.instance_id), tunnel=tunnel)

    def with_state(self, state: State) -> SandboxRecord:
        """This record, once ``state`` holds (the instance fields clear when it is gone)."""
        changes: dict[str, Any] = {"state": recorded(state.phase), "tunnel": state.holds.tunnel}
        if not state.holds.instance and self.instance_id:
            changes.update(instance_id="", instance_ips=(), attempt=self.attempt + 1)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": RECORD_VERSION}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, InstanceSpec):
                value = dataclasses.asdict(value)
                value["volumes"] = list(value["volumes"])
            elif isinstance(value, PodNetwork):
                value = apf.to_json_object(apf.ApfConfig(pod_network=value))["pod-network"]
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, SandboxState):
                value = value.value
            elif isinstance(value, Mapping):
                value = dict(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SandboxRecord:
        version = data.get("version")
        if version not in READABLE_VERSIONS:
            raise ValueError(f"unsupported sandbox record version {version!r}")
        spec = dict(data["spec"])
        spec["volumes"] = tuple(spec.get("volumes", ()))
        names = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {k: v for k, v in data.items() if k in names}
        values["spec"] = InstanceSpec(**spec)
        values["state"] = SandboxState(data.get("state", SandboxState.CREATED.value))
        if values["state"] not in (SandboxState.CREATED, SandboxState.STARTING,
                                   SandboxState.RUNNING, SandboxState.STOP_FAILED):
            raise ValueError(f"sandbox record in state {values['state'].value!r}")
        values["instance_ips"] = tuple(data.get("instance_ips", ()))
        values["extra"] = dict(data.get("extra", {}))
        if version == 1:
            values.update(_from_v1(data, values["state"]))
        else:
            network = data.get("pod_network")
            values["pod_network"] = (apf.from_json_object({"pod-network": network}).pod_network
                                     if network is not None else None)
        if not isinstance(values.get("attempt", 0), int) or not isinstance(
                values.get("tunnel", False), bool):
            raise ValueError("sandbox record: attempt must be a number, tunnel a boolean")
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)  # one line: the C encoder

    @classmethod
    def from_json(cls, text: str | bytes) -> SandboxRecord:
        return cls.from_dict(json.loads(text))


def _from_v1(data: Mapping[str, Any], state: SandboxState) -> dict[str, Any]:
    """Version 1 kept the whole apf.json text and no tunnel flag: a tunnel may exist once
    an instance was recorded (a v1 ``stop-failed`` record had not torn it down yet)."""
    network = apf.loads(data["apf_json"]).pod_network
    has_tunnel = (network is not None and network.tunnel_type != "none"
                  and bool(data.get("instance_id")) and state is not SandboxState.CREATED)
    return {"pod_network": network, "tunnel": has_tunnel, "attempt": 0}
