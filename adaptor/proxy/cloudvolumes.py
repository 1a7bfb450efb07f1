"""The two volume annotations the agent proxy adds to a CreateContainer request.

As upstream's ``pkg/adaptor/proxy/service.go CreateContainer``:

- ``io.confidentialcontainers.org.peerpodvolumes.target_path``: every OCI mount whose cleaned
  source contains ``/volumes/kubernetes.io~csi/`` and whose source has a direct-volume
  directory is appended to the annotation, preceded by a comma when it is not the request's
  first mount (so the value starts with a comma when mount 0 is not such a mount; upstream's
  forwarder skips the empty element).
- ``io.confidentialcontainers.org.cloud_volumes``: for each volume of
  :func:`adaptor.volumes.scan` (index N) that a mount of the container has as its source,
  ``"vol-N": {"mount_point", "fs_type" (default ext4), "lun": "N", "disk_id",
  "encrypt_type"?, "key_id"?}``, encoded exactly as Go's ``encoding/json`` encodes upstream's
  ``map[string]util.CloudVolumeAnnotation``. Set only when there is at least one volume.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass

from adaptor.volumes import CSI_MARKER, SANDBOX_UID, DirectVolume, entry_name, scan

log = logging.getLogger(__name__)

TARGET_PATH_KEY = "io.confidentialcontainers.org.peerpodvolumes.target_path"
CLOUD_VOLUMES_KEY = "io.confidentialcontainers.org.cloud_volumes"
DEFAULT_FS_TYPE = "ext4"


@dataclass(frozen=True, slots=True)
class Mount:
    source: str
    destination: str


@dataclass(frozen=True, slots=True)
class CloudVolume:
    """Upstream's ``util.CloudVolumeAnnotation``, fields in its declaration order."""

    mount_point: str
    fs_type: str
    lun: str
    disk_id: str
    fs_group: str = ""  # omitempty; upstream's proxy never sets it
    encrypt_type: str = ""  # omitempty
    key_id: str = ""  # omitempty


# Go's encoding/json escapes these inside strings (HTML safety and JavaScript line ends);
# Python's json leaves them as they are. Structural JSON never contains them.
_GO_ESCAPES = str.maketrans({
    "<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
    "\u2028": "\\u2028", "\u2029": "\\u2029",
})


def go_json(volumes: Mapping[str, CloudVolume]) -> str:
    """``json.Marshal(map[string]util.CloudVolumeAnnotation)`` byte for byte (Go 1.22 and
    later, which write ``\\b`` and ``\\f`` as short escapes, as Python does)."""
    document = {
        key: _fields(volumes[key])
        for key in sorted(volumes, key=lambda k: k.encode("utf-8"))
    }
    text = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    return text.translate(_GO_ESCAPES)


def _fields(volume: CloudVolume) -> dict[str, str]:
    fields = {
        "mount_point": volume.mount_point,
        "fs_type": volume.fs_type,
        "lun": volume.lun,
        "disk_id": volume.disk_id,
    }
    for key, value in (("fs_group", volume.fs_group), ("encrypt_type", volume.encrypt_type),
                       ("key_id", volume.key_id)):
        if value:
            fields[key] = value
    return fields


def go_clean(path: str) -> str:
    """Go's ``filepath.Clean`` on a Unix path (``normpath`` keeps a leading ``//``)."""
    cleaned = posixpath.normpath(path)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


def is_target_path(source: str, directory: str) -> bool:
    """Upstream's ``isNodePublishVolumeTargetPath``."""
    if CSI_MARKER not in go_clean(source):
        return False
    return os.path.exists(os.path.join(directory, entry_name(source)))


def target_paths(mounts: Sequence[Mount], directory: str, current: str) -> str:
    """The ``target_path`` annotation after upstream's loop over ``mounts`` (``current`` is
    the value the request already carries, usually empty)."""
    value = current
    for index, mount in enumerate(mounts):
        if is_target_path(mount.source, directory):
            if index > 0:
                value += ","
            value += mount.source
    return value


def cloud_volumes(
    sandbox_id: str, mounts: Sequence[Mount], volumes: Sequence[DirectVolume]
) -> dict[str, CloudVolume]:
    """``vol-N`` for each of the pod's volumes (index N) that one of ``mounts`` uses."""
    result: dict[str, CloudVolume] = {}
    for index, volume in enumerate(volumes):
        destination = next((m.destination for m in mounts if m.source == volume.path), "")
        if not destination:
            log.info("sandbox=%s: cloud volume disk %s has no matching mount in container "
                     "spec, skipping", sandbox_id, volume.disk_id)
            continue
        key = f"vol-{index}"
        result[key] = CloudVolume(
            mount_point=destination,
            fs_type=volume.fs_type or DEFAULT_FS_TYPE,
            lun=str(index),
            disk_id=volume.disk_id,
            encrypt_type=volume.encrypt_type,
            key_id=volume.key_id,
        )
        log.info("sandbox=%s: Detected cloud volume %s -> %s (lun=%d, disk=%s, fs=%s, "
                 "encrypt=%s)", sandbox_id, key, destination, index, volume.disk_id,
                 result[key].fs_type, volume.encrypt_type)
    return result


def annotate(
    sandbox_id: str,
    mounts: Sequence[Mount],
    annotations: MutableMapping[str, str],
    directory: str,
) -> bool:
    """Add both annotations to ``annotations`` (the container's OCI annotations); True when
    anything changed. Raises :class:`adaptor.volumes.VolumeError` for a malformed
    ``mountInfo.json`` of the pod."""
    changed = False
    paths = target_paths(mounts, directory, annotations.get(TARGET_PATH_KEY, ""))
    if paths != annotations.get(TARGET_PATH_KEY, ""):
        annotations[TARGET_PATH_KEY] = paths
        changed = True
    volumes = cloud_volumes(sandbox_id, mounts,
                            scan(directory, annotations.get(SANDBOX_UID, "")))
    if volumes:
        encoded = go_json(volumes)
        annotations[CLOUD_VOLUMES_KEY] = encoded
        log.info("sandbox=%s: Set cloud_volumes annotation: %s", sandbox_id, encoded)
        changed = True
    return changed
