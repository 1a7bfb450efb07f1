"""The sandbox record: everything the adaptor knows about one pod VM, as a frozen value.

Records are JSON-serialisable (``to_json`` / ``from_json``) so that a state store can keep
them on disk across restarts. They carry the rendered user-data, which holds the VM's TLS
server key: whoever persists them must write them with mode 0600.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from providers.base import InstanceSpec

SOCKET_NAME = "agent.ttrpc"
APF_COPY_NAME = "apf.json"
RECORD_VERSION = 1


class SandboxState(enum.StrEnum):
    CREATED = "created"  # CreateVM done, no instance yet
    STARTING = "starting"  # StartVM in progress
    RUNNING = "running"  # instance up, proxy serving
    STOP_FAILED = "stop-failed"  # the instance could not be deleted; retry on StopVM/sweep


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
    apf_json: str  # the pod VM's apf.json (pod network, TLS material)
    user_data: str  # the rendered #cloud-config; never logged
    fingerprint: str
    state: SandboxState = SandboxState.CREATED
    instance_id: str = ""
    instance_ips: tuple[str, ...] = ()
    server_name: str = ""  # TLS name the forwarder's certificate must carry ("" without TLS)
    extra: Mapping[str, str] = field(default_factory=dict)

    def replace(self, **changes: Any) -> SandboxRecord:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": RECORD_VERSION}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, InstanceSpec):
                value = dataclasses.asdict(value)
                value["volumes"] = list(value["volumes"])
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
        if data.get("version") != RECORD_VERSION:
            raise ValueError(f"unsupported sandbox record version {data.get('version')!r}")
        spec = dict(data["spec"])
        spec["volumes"] = tuple(spec.get("volumes", ()))
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in data:
                values[f.name] = data[f.name]
        values["spec"] = InstanceSpec(**spec)
        values["state"] = SandboxState(data.get("state", SandboxState.CREATED.value))
        values["instance_ips"] = tuple(data.get("instance_ips", ()))
        values["extra"] = dict(data.get("extra", {}))
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> SandboxRecord:
        return cls.from_dict(json.loads(text))
