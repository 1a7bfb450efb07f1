"""The ``io.confidentialcontainers.org.cloud_volumes`` annotation: parse and validate.

The adaptor's agent proxy writes it on ``CreateContainer`` for the pod's CSI block volumes
(upstream ``pkg/util/cloud.go CloudVolumeAnnotation``)::

    {"vol-0": {"mount_point": "/data", "fs_type": "ext4", "lun": "0", "disk_id": "vol-0abc",
               "fs_group": "2000", "encrypt_type": "luks2", "key_id": "default/key/disk"}}

Every value is a string; ``fs_group``, ``encrypt_type`` and ``key_id`` may be absent. The
volumes are handled in sorted-name order. Checks and their messages are upstream's
(``interceptor.go CreateContainer``, ``validateEncryptParams``); two are added: a name of the
form ``vol-<N>`` (what the adaptor always writes, with ``lun`` = N) must carry LUN N, and no
two volumes may claim the same LUN, so a garbled annotation cannot mount one disk twice.
Encryption parameters are checked here, before any disk is touched, rather than after the
disk was found.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass

from runtime.errors import ForwarderError

log = logging.getLogger(__name__)

CLOUD_VOLUMES_KEY = "io.confidentialcontainers.org.cloud_volumes"
ALLOWED_FS_TYPES = ("ext4", "ext3", "xfs")
DEFAULT_FS_TYPE = "ext4"
LUKS2 = "luks2"
_FIELDS = ("mount_point", "fs_type", "lun", "disk_id", "fs_group", "encrypt_type", "key_id")
_CANONICAL_NAME = re.compile(r"vol-(0|[1-9][0-9]*)")


class CloudVolumeError(ForwarderError):
    """A cloud volume could not be prepared; the message says which and why."""


class CloudVolumeSpecError(CloudVolumeError):
    """The annotation is malformed or names something this forwarder will not do."""


def go_quote(text: str) -> str:
    """Go's ``%q`` for the texts that appear here (JSON string quoting is close enough)."""
    return json.dumps(text, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class CloudVolume:
    """One entry of the annotation, validated."""

    name: str
    mount_point: str  # the container path whose OCI mount is rewritten
    fs_type: str
    lun: int
    disk_id: str
    fs_group: int | None = None
    encrypt_type: str = ""  # "" (plain) or "luks2"
    key_id: str = ""

    @property
    def encrypted(self) -> bool:
        return bool(self.encrypt_type)

    @property
    def mapper_name(self) -> str:
        return f"caa-{self.name}"

    @property
    def key_uri(self) -> str:
        return f"kbs:///{self.key_id}"


def _fields_of(name: str, raw: object) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise CloudVolumeSpecError(
            "corrupt cloud_volumes annotation (pod would start without volumes): "
            f"volume {go_quote(name)} is not a JSON object")
    fields: dict[str, str] = {}
    for key in _FIELDS:
        value = raw.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise CloudVolumeSpecError(
                "corrupt cloud_volumes annotation (pod would start without volumes): "
                f"{name}.{key} must be a JSON string, not {json.dumps(value)}")
        fields[key] = value
    return fields


def _lun(name: str, text: str) -> int:
    if not re.fullmatch(r"[+]?[0-9]+", text):
        raise CloudVolumeSpecError(
            f"cloud volume {name} has invalid lun {go_quote(text)}: not a non-negative integer")
    lun = int(text)
    canonical = _CANONICAL_NAME.fullmatch(name)
    if canonical and int(canonical.group(1)) != lun:
        raise CloudVolumeSpecError(
            f"cloud volume {name} has lun {lun}, but its name says LUN {canonical.group(1)} "
            "(LUN mismatch)")
    return lun


def _fs_group(name: str, text: str) -> int | None:
    if not text:
        return None
    try:
        return int(text)
    except ValueError:  # upstream ignores a non-numeric fs_group
        log.warning("cloud volume %s: ignoring fs_group %r: not a number", name, text)
        return None


def _encryption(encrypt_type: str, key_id: str) -> str:
    """Upstream's ``validateEncryptParams``: ``luks`` and ``luks2`` mean LUKS2."""
    if not encrypt_type:
        return ""
    if not key_id:
        raise CloudVolumeSpecError(
            f"encrypt_type {go_quote(encrypt_type)} requires a kbs-key-id but none was provided")
    if encrypt_type.lower() not in ("luks", "luks2"):
        raise CloudVolumeSpecError(
            f"unsupported encrypt_type {go_quote(encrypt_type)} (allowed: luks, luks2)")
    return LUKS2


def _volume(name: str, raw: object) -> CloudVolume:
    fields = _fields_of(name, raw)
    mount_point, lun_text = fields.get("mount_point", ""), fields.get("lun", "")
    if not mount_point or not lun_text:
        raise CloudVolumeSpecError(f"cloud volume {name} missing required mount_point or lun field")
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise CloudVolumeSpecError(f"cloud volume {go_quote(name)} has unsafe name")
    fs_type = fields.get("fs_type") or DEFAULT_FS_TYPE
    if fs_type not in ALLOWED_FS_TYPES:
        raise CloudVolumeSpecError(
            f"cloud volume {name} requests unsupported filesystem type {go_quote(fs_type)} "
            f"(allowed: {', '.join(ALLOWED_FS_TYPES)})")
    lun = _lun(name, lun_text)
    try:
        encrypt_type = _encryption(fields.get("encrypt_type", ""), fields.get("key_id", ""))
    except CloudVolumeSpecError as exc:
        raise CloudVolumeSpecError(f"cloud volume {name}: {exc}") from None
    return CloudVolume(
        name=name,
        mount_point=mount_point,
        fs_type=fs_type,
        lun=lun,
        disk_id=fields.get("disk_id", ""),
        fs_group=_fs_group(name, fields.get("fs_group", "")),
        encrypt_type=encrypt_type,
        key_id=fields.get("key_id", "") if encrypt_type else "",
    )


def parse_cloud_volumes(text: str) -> tuple[CloudVolume, ...]:
    """The volumes of the annotation value, sorted by name; :class:`CloudVolumeSpecError`
    if any entry is bad (then none is used)."""
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise CloudVolumeSpecError(
            f"corrupt cloud_volumes annotation (pod would start without volumes): {exc}"
        ) from None
    if not isinstance(raw, dict):
        raise CloudVolumeSpecError(
            "corrupt cloud_volumes annotation (pod would start without volumes): "
            "not a JSON object")
    volumes = tuple(_volume(name, raw[name]) for name in sorted(raw))
    owners: dict[int, str] = {}
    for volume in volumes:
        other = owners.setdefault(volume.lun, volume.name)
        if other != volume.name:
            raise CloudVolumeSpecError(
                f"cloud volumes {other} and {volume.name} both claim LUN {volume.lun} "
                "(LUN mismatch)")
    return volumes
