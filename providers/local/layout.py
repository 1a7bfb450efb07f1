"""Where one local pod VM keeps its files, and its ``instance.json`` record.

``<state>/<id>/``:
  ``instance.json``   the record below (written atomically, mode 0600)
  ``cidata/user-data`` the rendered user-data (the VM's config drive)
  ``run/peerpod/``    what process-user-data writes (apf.json, initdata, aa.toml, ...)
  ``agent.sock``      the agent's ttrpc socket
  ``agent-calls.jsonl`` what the development agent received (when it is the agent)
  ``vm.log``          output of the supervisor and everything it starts
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RECORD_NAME = "instance.json"
RECORD_VERSION = 1
#: Instance ids are ten lowercase hex digits; anything else never names a local VM.
ID_PATTERN = re.compile(r"[0-9a-f]{10}")
#: Longest path a unix socket can bind to (sun_path is 108 bytes with the NUL).
UNIX_PATH_MAX = 107


def vm_netns(instance_id: str) -> str:
    return f"ppvm-{instance_id}"


def pod_netns(instance_id: str) -> str:
    """The VM's pod namespace. Namespace names are global, so each VM has its own."""
    return f"ppvm-{instance_id}-pod"


def host_veth(instance_id: str) -> str:
    """Host end of the VM's veth pair (15 characters at most, as Linux requires)."""
    return f"ppv{instance_id}"


def second_host_veth(instance_id: str) -> str:
    """Host end of the veth pair of the VM's second NIC (``EXTERNAL_NETWORK_VIA_PODVM``)."""
    return f"ppx{instance_id}"


@dataclass(frozen=True, slots=True)
class VmPaths:
    root: Path

    @property
    def record(self) -> Path:
        return self.root / RECORD_NAME

    @property
    def cidata(self) -> Path:
        return self.root / "cidata"

    @property
    def user_data(self) -> Path:
        return self.cidata / "user-data"

    @property
    def peerpod_dir(self) -> Path:
        return self.root / "run" / "peerpod"

    @property
    def apf_json(self) -> Path:
        return self.peerpod_dir / "apf.json"

    @property
    def agent_socket(self) -> Path:
        return self.root / "agent.sock"

    @property
    def agent_calls(self) -> Path:
        return self.root / "agent-calls.jsonl"

    @property
    def notify_socket(self) -> Path:
        return self.root / "notify.sock"

    @property
    def log(self) -> Path:
        return self.root / "vm.log"


@dataclass(frozen=True, slots=True)
class VmRecord:
    """What the provider remembers about one VM, so a restarted adaptor still finds it."""

    id: str
    name: str
    address: str
    netns: bool
    created_at: datetime
    tags: Mapping[str, str] = field(default_factory=dict)
    sandbox_id: str = ""
    pid: int | None = None
    pid_start: int | None = None  # the leader's start time (clock ticks), against pid reuse
    second_address: str = ""  # of the second NIC ("": none)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": RECORD_VERSION,
            "id": self.id,
            "name": self.name,
            "address": self.address,
            "netns": self.netns,
            "created_at": self.created_at.isoformat(),
            "tags": dict(self.tags),
            "sandbox_id": self.sandbox_id,
            "pid": self.pid,
            "pid_start": self.pid_start,
            **({"second_address": self.second_address} if self.second_address else {}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> VmRecord:
        """Parse a record; raises ``ValueError`` (or ``KeyError``/``TypeError``) if malformed."""
        created = datetime.fromisoformat(str(data["created_at"]))
        if created.tzinfo is None:
            raise ValueError("created_at has no timezone")
        tags = data.get("tags") or {}
        if not isinstance(tags, dict):
            raise ValueError("tags is not an object")
        pid = data.get("pid")
        pid_start = data.get("pid_start")
        return cls(
            id=str(data["id"]),
            name=str(data["name"]),
            address=str(data["address"]),
            netns=bool(data["netns"]),
            created_at=created,
            tags={str(k): str(v) for k, v in tags.items()},
            sandbox_id=str(data.get("sandbox_id", "")),
            pid=int(pid) if pid is not None else None,
            pid_start=int(pid_start) if pid_start is not None else None,
            second_address=str(data.get("second_address", "")),
        )


def write_record(paths: VmPaths, record: VmRecord) -> None:
    """Write ``instance.json`` atomically (temp file + rename), mode 0600."""
    text = json.dumps(record.to_json(), indent=2, sort_keys=True) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=".instance.", dir=paths.root)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, paths.record)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_record(paths: VmPaths) -> VmRecord | None:
    """The VM's record, or ``None`` when it is missing or unreadable (logged)."""
    try:
        data = json.loads(paths.record.read_text())
        return VmRecord.from_json(data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("instance=%s: ignoring unreadable %s: %s", paths.root.name, RECORD_NAME, exc)
        return None



async def poll_until(done: Callable[[], bool], timeout: float) -> bool:
    """Call ``done`` every few milliseconds until it is true (True) or ``timeout`` passes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if done():
            return True
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.05)
