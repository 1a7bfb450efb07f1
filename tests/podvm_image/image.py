"""Read the built pod VM image's root file system without mounting it.

The qcow2 is converted to raw, the root partition (GPT name ``root``) is cut out, and
``debugfs`` (e2fsprogs) lists directories, reads files and dumps subtrees from it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

IMAGE_ENV = "PEERPODS_PODVM_IMAGE"
DEFAULT_IMAGE = "/var/cache/peerpods-test/podvm-image/podvm.qcow2"
REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "podvm-image"


def image_path() -> Path:
    return Path(os.environ.get(IMAGE_ENV, DEFAULT_IMAGE))


def manifest_path() -> Path:
    return image_path().with_name("podvm.manifest.json")


class Unavailable(Exception):
    """Why the image cannot be inspected here (becomes the skip reason)."""


@dataclass(frozen=True)
class Entry:
    name: str
    mode: int

    @property
    def is_dir(self) -> bool:
        return self.mode & 0o170000 == 0o040000

    @property
    def is_file(self) -> bool:
        return self.mode & 0o170000 == 0o100000

    @property
    def is_link(self) -> bool:
        return self.mode & 0o170000 == 0o120000


class RootFs:
    """The ext4 root partition of the image, extracted to ``workdir``."""

    def __init__(self, qcow2: Path, workdir: Path) -> None:
        for tool in ("qemu-img", "sfdisk", "debugfs"):
            if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
                raise Unavailable(f"{tool} is not installed")
        raw = workdir / "disk.raw"
        subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(qcow2), str(raw)],
                       check=True)
        table = json.loads(subprocess.run(["sfdisk", "-J", str(raw)], check=True,
                                          capture_output=True, text=True).stdout)
        self.partition_table = table["partitiontable"]
        root = next(p for p in self.partition_table["partitions"] if p.get("name") == "root")
        self.path = workdir / "root.img"
        with raw.open("rb") as src, self.path.open("wb") as dst:
            src.seek(root["start"] * 512)
            left = root["size"] * 512
            while left:
                block = src.read(min(left, 1 << 22))
                if not block:
                    break
                dst.write(block)
                left -= len(block)
        raw.unlink()

    def _debugfs(self, request: str) -> str:
        done = subprocess.run(["debugfs", "-R", request, str(self.path)], check=True,
                              capture_output=True, text=True, errors="replace")
        return done.stdout

    def list(self, path: str) -> list[Entry]:
        """Entries of a directory ([] when it does not exist)."""
        entries = []
        for line in self._debugfs(f"ls -p {path}").splitlines():
            # /inode/mode/uid/gid/name/size/
            fields = line.strip().split("/")
            if len(fields) >= 6 and fields[5] not in (".", ".."):
                entries.append(Entry(name=fields[5], mode=int(fields[2], 8)))
        return entries

    def exists(self, path: str) -> bool:
        parent, _, name = path.rstrip("/").rpartition("/")
        return any(e.name == name for e in self.list(parent or "/"))

    def read(self, path: str) -> bytes:
        done = subprocess.run(["debugfs", "-R", f"cat {path}", str(self.path)], check=True,
                              capture_output=True)
        return done.stdout

    def link_target(self, path: str) -> str:
        out = self._debugfs(f"stat {path}")
        for line in out.splitlines():
            if line.startswith("Fast link dest:"):
                return line.split(":", 1)[1].strip().strip('"')
        raise AssertionError(f"{path} is not a fast symlink: {out[:300]}")

    def dump(self, path: str, target: Path) -> Path:
        """Copy a subtree out (``rdump``); returns the local copy."""
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run(["debugfs", "-R", f"rdump {path} {target}", str(self.path)], check=True,
                       capture_output=True)
        return target / Path(path).name
