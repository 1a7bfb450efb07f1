"""The pod's CSI block volumes, as the Kata direct-volume directory describes them.

A CSI block driver publishes a volume for a peer pod with ``kata-runtime direct-volume add``:
a directory ``<direct-volumes>/<base64url(volume path)>/`` holding ``mountInfo.json``
(``device``, ``fstype``, ``metadata.{cloud-volume-path, encrypt-type, kbs-key-id}``).
Upstream reads it twice, with one scan (``pkg/util/cloud.go GetCSIVolumesForPod`` at
CreateVM, ``pkg/adaptor/proxy/service.go CreateContainer`` in the agent proxy); both use
:func:`scan` here, so that volume N of CreateVM's ``InstanceSpec.volumes`` is the disk the
annotation calls ``vol-N`` with LUN N:

- entries are taken in byte order of their names (Go's ``os.ReadDir``); only directories
  whose name decodes (padded base64url) to a path containing ``/volumes/kubernetes.io~csi/``
  count, and, when the pod's uid is known (``io.kubernetes.cri.sandbox-uid``), only those
  whose path contains ``/pods/<uid>/``;
- an entry without ``mountInfo.json`` is skipped (the driver has not finished);
- the disk id is ``metadata.cloud-volume-path``, else ``device``.

Unlike upstream, a ``mountInfo.json`` that is not a JSON object of strings, or that names no
disk, is an error (:class:`VolumeError`) rather than a volume silently left out: a pod whose
volume cannot be attached must not start without it.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adaptor.errors import InvalidRequest

log = logging.getLogger(__name__)

DIRECT_VOLUMES_DIR = "/run/kata-containers/shared/direct-volumes"
MOUNT_INFO = "mountInfo.json"
CSI_MARKER = "/volumes/kubernetes.io~csi/"
SANDBOX_UID = "io.kubernetes.cri.sandbox-uid"
MAX_MOUNT_INFO = 64 * 1024


class VolumeError(InvalidRequest):
    """A direct-volume entry of the pod cannot be read as a volume."""


@dataclass(frozen=True, slots=True)
class DirectVolume:
    """One CSI block volume of the pod. Empty strings stand for absent fields."""

    path: str  # the volume path the entry's name encodes (a container mount's source)
    disk_id: str
    fs_type: str = ""
    encrypt_type: str = ""
    key_id: str = ""


def entry_name(volume_path: str) -> str:
    """The direct-volume directory name of a volume path (Go's ``base64.URLEncoding``)."""
    return base64.urlsafe_b64encode(volume_path.encode("utf-8", "surrogateescape")).decode()


def decode_entry_name(name: str) -> str | None:
    """The volume path a directory name encodes, ``None`` when it is not padded base64url."""
    try:
        raw = base64.b64decode(name.encode("ascii"), altchars=b"-_", validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None
    if "+" in name or "/" in name:  # not in the URL alphabet (altchars made them valid)
        return None
    return raw.decode("utf-8", "surrogateescape")


def scan(directory: str, pod_uid: str = "") -> list[DirectVolume]:
    """The pod's volumes in canonical order (index N is LUN N). Raises :class:`VolumeError`
    for an entry whose ``mountInfo.json`` is unreadable or malformed."""
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name.encode("utf-8",
                                                                             "surrogateescape"))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise VolumeError(f"cannot list direct volumes in {directory}: {exc.strerror}") from None
    volumes = []
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False):
            continue
        path = decode_entry_name(entry.name)
        if path is None or CSI_MARKER not in path:
            continue
        if pod_uid and f"/pods/{pod_uid}/" not in path:
            continue
        volume = _read(os.path.join(entry.path, MOUNT_INFO), path)
        if volume is not None:
            volumes.append(volume)
    return volumes


def pod_volumes(directory: str, annotations: Mapping[str, str]) -> list[DirectVolume]:
    """:func:`scan` filtered by the pod uid in ``annotations``, when there is one."""
    return scan(directory, annotations.get(SANDBOX_UID, ""))


def _read(mount_info: str, path: str) -> DirectVolume | None:
    try:
        with open(mount_info, "rb") as f:
            data = f.read(MAX_MOUNT_INFO + 1)
    except FileNotFoundError:
        log.info("direct volume %s has no %s yet: skipped", path, MOUNT_INFO)
        return None
    except OSError as exc:
        raise VolumeError(f"cannot read {mount_info}: {exc.strerror}") from None
    if len(data) > MAX_MOUNT_INFO:
        raise VolumeError(f"{mount_info} is larger than {MAX_MOUNT_INFO} bytes")
    info = _parse(data, mount_info)
    metadata = info.get("metadata") or {}
    disk_id = metadata.get("cloud-volume-path") or info.get("device") or ""
    if not disk_id:
        raise VolumeError(f"{mount_info} names no disk (neither metadata.cloud-volume-path "
                          "nor device) for volume " + path)
    return DirectVolume(
        path=path,
        disk_id=disk_id,
        fs_type=info.get("fstype") or "",
        encrypt_type=metadata.get("encrypt-type") or "",
        key_id=metadata.get("kbs-key-id") or "",
    )


def _parse(data: bytes, mount_info: str) -> dict[str, Any]:
    try:
        info = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise VolumeError(f"{mount_info} is not valid JSON: {exc}") from None
    if not isinstance(info, dict):
        raise VolumeError(f"{mount_info} is not a JSON object")
    for key in ("device", "fstype"):
        _check_string(info.get(key), f"{mount_info}: {key}")
    metadata = info.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise VolumeError(f"{mount_info}: metadata is not a JSON object")
        for key, value in metadata.items():
            _check_string(value, f"{mount_info}: metadata.{key}")
    return info


def _check_string(value: object, what: str) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise VolumeError(f"{what} is not a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise VolumeError(f"{what} is not valid UTF-8") from None
