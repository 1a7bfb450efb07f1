"""Filesystem side of ``CreateContainer``: bind-mount sources and CSI volume mounts.

* Bind mounts whose source does not exist get the source created as a directory (the
  pod VM has none of the worker's host paths), as upstream does.
* Sources listed in the ``io.confidentialcontainers.org.peerpodvolumes.target_path``
  annotation are CSI volumes published into the VM; the container must not start before
  each is mounted, so the call waits (polling, at most 5 s apart) for up to 3 minutes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from runtime.errors import ForwarderError

log = logging.getLogger(__name__)

VOLUME_TARGET_PATH_KEY = "io.confidentialcontainers.org.peerpodvolumes.target_path"
MOUNT_WAIT_TIMEOUT = 180.0
MOUNT_POLL_MAX_INTERVAL = 5.0
_MOUNT_POLL_FIRST_INTERVAL = 0.1
_BIND_OPTIONS = frozenset({"bind", "rbind"})
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")

MountCheck = Callable[[str], bool]


@dataclass(frozen=True, slots=True)
class MountView:
    """The three OCI mount fields this module looks at."""

    source: str
    type: str
    options: tuple[str, ...]

    @property
    def is_bind(self) -> bool:
        return self.type == "bind" or any(opt in _BIND_OPTIONS for opt in self.options)


class MountWaitTimeout(ForwarderError):
    """A CSI target path was not mounted in time."""

    def __init__(self, path: str, waited: float) -> None:
        super().__init__(f"Timeout waiting for device to mount to {path} (waited {waited:.0f}s)")
        self.path = path


def _unescape(field: str) -> str:
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def mount_points(mountinfo: str = "/proc/self/mountinfo") -> set[str]:
    """Every mount point listed in ``mountinfo`` (field 5; octal escapes decoded)."""
    points: set[str] = set()
    with open(mountinfo, encoding="utf-8", errors="surrogateescape") as handle:
        for line in handle:
            fields = line.split(" ", 5)
            if len(fields) >= 5:
                points.add(_unescape(fields[4]))
    return points


def mountinfo_checker(mountinfo: str = "/proc/self/mountinfo") -> MountCheck:
    """A mount check reading ``mountinfo`` (a different file only in tests)."""

    def is_mounted(path: str) -> bool:
        return os.path.realpath(path) in mount_points(mountinfo)

    return is_mounted


def target_paths(annotation: str) -> frozenset[str]:
    """The comma-separated CSI target paths of the annotation value."""
    return frozenset(item.strip() for item in annotation.split(",") if item.strip())


def create_missing_bind_sources(mounts: Iterable[MountView], *, label: str) -> list[str]:
    """mkdir -p the source of every bind mount whose source does not exist.

    Failures are logged and skipped (the agent will then report the mount error).
    Returns the directories created.
    """
    created: list[str] = []
    for mount in mounts:
        if not mount.is_bind or not mount.source or os.path.lexists(mount.source):
            continue
        if not os.path.isabs(mount.source):
            log.warning("%s: bind mount source %r is not absolute, not creating it",
                        label, mount.source)
            continue
        try:
            os.makedirs(mount.source, mode=0o777, exist_ok=True)
        except OSError as exc:
            log.warning("%s: failed to create bind mount source %s: %s", label, mount.source, exc)
            continue
        log.info("%s: mount source %s did not exist, created it", label, mount.source)
        created.append(mount.source)
    return created


async def wait_mounted(
    path: str,
    *,
    label: str,
    is_mounted: MountCheck,
    limit: float = MOUNT_WAIT_TIMEOUT,
    max_interval: float = MOUNT_POLL_MAX_INTERVAL,
) -> None:
    """Poll until ``path`` is a mount point; :class:`MountWaitTimeout` after ``limit`` s."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    interval = min(_MOUNT_POLL_FIRST_INTERVAL, max_interval)
    log.info("%s: waiting for a device to be mounted to %s", label, path)
    while True:
        try:
            mounted = is_mounted(path)
        except OSError as exc:
            log.warning("%s: mount check of %s failed: %s", label, path, exc)
            mounted = False
        if mounted:
            log.info("%s: device has been mounted to %s", label, path)
            return
        elapsed = loop.time() - started
        if elapsed >= limit:
            log.error("%s: timeout waiting for device to mount to %s", label, path)
            raise MountWaitTimeout(path, elapsed)
        await asyncio.sleep(min(interval, limit - elapsed))
        interval = min(interval * 2, max_interval)
