"""``SecureMount`` for ``block-device`` volumes: LUKS2 through ``cryptsetup``.

Options (upstream's keys): ``deviceId`` (``maj:min``) or ``devicePath``; ``sourceType``
``encrypted`` (open an existing LUKS2 device) or ``empty`` (format it first, header
detached under ``/run/confidential-containers/cdh/luks-headers``); ``key`` as a
``kbs://`` URI, a ``sealed.`` secret or ``file://`` path (none: a random 4096-byte key);
``encryptionType`` ``luks2``; ``dataIntegrity``; ``mapperName``; ``targetType`` ``device``
(symlink the mapper device at the mount point) or ``fileSystem`` with ``filesystemType``
(ext4) and ``mkfsOpts``. The key reaches cryptsetup on stdin only.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import secrets
import shlex
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from guest.errors import GuestError, ResourceUriError
from guest.kbs.resource_uri import ResourceUri

log = logging.getLogger(__name__)

BLOCK_DEVICE = "block-device"
LUKS_HEADERS_DIR = Path("/run/confidential-containers/cdh/luks-headers")
LUKS2_HEADER_MIN_SIZE = 16 * 1024 * 1024
SECTOR_SIZE = "4096"
RANDOM_KEY_BYTES = 4096

GetKey = Callable[[str], Awaitable[bytes]]
Unseal = Callable[[bytes], Awaitable[bytes]]


class SecureMountError(GuestError):
    """A secure mount could not be set up."""


@dataclass(frozen=True, slots=True)
class BlockDeviceParameters:
    device_path: str
    source_type: str
    key: str | None
    integrity: bool
    mapper_name: str
    target_type: str
    filesystem_type: str
    mkfs_opts: tuple[str, ...]

    @classmethod
    def parse(cls, options: Mapping[str, str], sysfs: Path = Path("/sys")) -> BlockDeviceParameters:
        if options.get("encryptionType") != "luks2":
            raise SecureMountError(
                f"unsupported encryptionType {options.get('encryptionType')!r} (luks2 only)"
            )
        source = options.get("sourceType")
        if source not in ("encrypted", "empty"):
            raise SecureMountError(f"sourceType must be encrypted or empty, not {source!r}")
        target = options.get("targetType", "")
        if target not in ("device", "fileSystem"):
            raise SecureMountError(f"targetType must be device or fileSystem, not {target!r}")
        return cls(
            device_path=_device_path(options, sysfs),
            source_type=source,
            key=options.get("key"),
            integrity=options.get("dataIntegrity") == "true",
            mapper_name=options.get("mapperName") or str(uuid.uuid4()),
            target_type=target,
            filesystem_type=options.get("filesystemType", "ext4"),
            mkfs_opts=tuple(shlex.split(options.get("mkfsOpts", ""))),
        )


def _device_path(options: Mapping[str, str], sysfs: Path) -> str:
    if "deviceId" in options:
        major, sep, minor = options["deviceId"].partition(":")
        if not sep or not major.isdigit() or not minor.isdigit():
            raise SecureMountError(f"deviceId {options['deviceId']!r} is not <major>:<minor>")
        uevent = sysfs / "dev" / "block" / f"{major}:{minor}" / "uevent"
        try:
            for line in uevent.read_text().splitlines():
                if line.startswith("DEVNAME="):
                    return f"/dev/{line.removeprefix('DEVNAME=')}"
        except OSError as exc:
            raise SecureMountError(f"no block device {major}:{minor}: {exc}") from exc
        raise SecureMountError(f"no DEVNAME for block device {major}:{minor}")
    if "devicePath" in options:
        return options["devicePath"]
    raise SecureMountError("no device specified (deviceId or devicePath)")


def header_path(device_path: str, headers_dir: Path = LUKS_HEADERS_DIR) -> Path:
    name = base64.urlsafe_b64encode(device_path.encode()).rstrip(b"=").decode()
    return headers_dir / f"{name}.header"


async def run(argv: Sequence[str], stdin: bytes | None = None) -> None:
    """Run a command; its failure (with stderr, never stdin) becomes SecureMountError."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await process.communicate(stdin)
    if process.returncode != 0:
        detail = stderr.decode(errors="replace").strip()[-500:]
        action = next((a for a in argv[1:] if not a.startswith("-")), "")
        raise SecureMountError(f"{argv[0]} {action} failed ({process.returncode}): {detail}")


class Cryptsetup:
    def __init__(self, binary: str = "cryptsetup", format_args: Sequence[str] = ()) -> None:
        self.binary = binary
        self.format_args = tuple(format_args)  # e.g. a cheaper PBKDF in tests

    async def format(self, device: str, header: Path, key: bytes, integrity: bool) -> None:
        args = [
            self.binary,
            "--batch-mode",
            "luksFormat",
            "--type",
            "luks2",
            "--cipher",
            "aes-xts-plain64",
            "--sector-size",
            SECTOR_SIZE,
            *self.format_args,
            "--header",
            str(header),
        ]
        if integrity:
            args += ["--integrity", "hmac-sha256", "--integrity-no-wipe", "--integrity-no-journal"]
        await run([*args, device, "-"], stdin=key)

    async def open(self, device: str, header: Path | None, name: str, key: bytes) -> None:
        args = [self.binary, "luksOpen"]
        if header is not None:
            args += ["--header", str(header)]
        await run([*args, "-d", "-", device, name], stdin=key)

    async def close(self, name: str) -> None:
        await run([self.binary, "luksClose", name])


class SecureMounter:
    def __init__(
        self,
        get_key: GetKey,
        unseal: Unseal,
        *,
        cryptsetup: Cryptsetup | None = None,
        headers_dir: Path = LUKS_HEADERS_DIR,
        sysfs: Path = Path("/sys"),
    ) -> None:
        self.get_key = get_key
        self.unseal = unseal
        self.cryptsetup = cryptsetup or Cryptsetup()
        self.headers_dir = headers_dir
        self.sysfs = sysfs

    async def secure_mount(
        self, volume_type: str, options: Mapping[str, str], flags: Sequence[str], mount_point: str
    ) -> None:
        if volume_type != BLOCK_DEVICE:
            raise SecureMountError(f"volume type {volume_type!r} is not supported (block-device)")
        params = BlockDeviceParameters.parse(options, self.sysfs)
        key = await self._key(params.key)
        header = None
        if params.source_type == "empty":
            log.warning("device=%s: encrypting the device wipes its data", params.device_path)
            header = header_path(params.device_path, self.headers_dir)
            _prepare_header(header)
            await self.cryptsetup.format(params.device_path, header, key, params.integrity)
        await self.cryptsetup.open(params.device_path, header, params.mapper_name, key)
        mapped = f"/dev/mapper/{params.mapper_name}"
        if params.target_type == "device":
            os.symlink(mapped, mount_point)
        else:
            if params.source_type == "empty":
                await run([f"mkfs.{params.filesystem_type}", *params.mkfs_opts, mapped])
            await run(["mount", "-t", params.filesystem_type, "-o", "noatime", mapped, mount_point])
        log.info("device=%s: mounted at %s", params.device_path, mount_point)

    async def _key(self, key_uri: str | None) -> bytes:
        if key_uri is None:
            return secrets.token_bytes(RANDOM_KEY_BYTES)
        if key_uri.startswith("sealed."):
            return await self.unseal(key_uri.encode())
        if key_uri.startswith("file://"):
            return await asyncio.to_thread(_read, key_uri.removeprefix("file://"))
        try:
            ResourceUri.parse(key_uri)
        except ResourceUriError as exc:
            raise SecureMountError("illegal key scheme (kbs://, sealed. or file://)") from exc
        return await self.get_key(key_uri)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _prepare_header(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, LUKS2_HEADER_MIN_SIZE)
    finally:
        os.close(fd)
