"""The images image/build made from this tree, mounted with buildah and run in a chroot.

A working container is made from the image and mounted (``buildah mount``); commands run in
``chroot`` inside a private mount namespace (``unshare --mount``) that has /proc, /dev and
/sys, with only the image's own env plus what the test gives. No fork happens on the way
(unshare, sh, chroot and env all exec), so the process a test starts is the image's command
and a signal sent to it reaches the program itself. Whatever the commands write goes to
the working container, which is removed afterwards.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "image" / "build"
STORE = os.environ.get("PEERPODS_IMAGE_STORE", "/var/cache/peerpods-test/image/storage")
RUNROOT = os.environ.get("PEERPODS_IMAGE_RUNROOT", "/run/peerpods-image")
NAME = "localhost/peerpods"
TARGETS = ("cloud-api-adaptor", "peerpods-ctrl")

# Mounts /proc, /dev and /sys under the root ($1), then execs chroot with the rest.
_ENTER = ('root=$1; shift; mount -t proc proc "$root/proc" && mount --rbind /dev "$root/dev" '
          '&& mount --rbind /sys "$root/sys"{binds} && exec chroot "$root" "$@"')


class Unavailable(Exception):
    """Why the image cannot be run here (becomes the skip reason)."""


def buildah(*args: str) -> str:
    done = subprocess.run(["buildah", "--root", STORE, "--runroot", RUNROOT,
                           "--storage-driver", "overlay", *args],
                          check=True, capture_output=True, text=True, timeout=300)
    return done.stdout


def current_key() -> str:
    return subprocess.run(["bash", str(BUILD), "--print-key"], check=True,
                          capture_output=True, text=True, timeout=120).stdout.strip()


@dataclass(frozen=True)
class MountedImage:
    target: str
    reference: str
    root: Path
    config: Mapping[str, Any]  # the OCI image config: Env, Entrypoint, Cmd, ...

    @property
    def env(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.config.get("Env") or ())

    def command(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
                binds: Mapping[Path, str] | None = None) -> list[str]:
        """The host command line that runs ``argv`` in the image with the image's env,
        updated by ``env``; ``binds`` maps host directories to where they appear inside."""
        pairs = [f"{k}={v}" for k, v in {**self.env, "HOME": "/root", **(env or {})}.items()]
        mounts = "".join(
            f' && mkdir -p "$root"{shlex.quote(inside)}'
            f' && mount --bind {shlex.quote(str(host))} "$root"{shlex.quote(inside)}'
            for host, inside in (binds or {}).items())
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                _ENTER.format(binds=mounts), "enter", str(self.root), "/usr/bin/env", "-i",
                *pairs, *argv]

    def run(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(argv, env), capture_output=True, text=True,
                              timeout=timeout)


@contextmanager
def mounted(target: str) -> Iterator[MountedImage]:
    """The image of ``target`` built from the current tree, in a fresh working container."""
    if os.geteuid() != 0:
        raise Unavailable("needs root (buildah mount, chroot)")
    for tool in ("buildah", "unshare", "chroot"):
        if shutil.which(tool) is None:
            raise Unavailable(f"{tool} is not installed (.ci/apt/image.txt)")
    reference = f"{NAME}/{target}:{current_key()}"
    try:
        inspected = json.loads(buildah("inspect", "--type", "image", reference))
    except subprocess.CalledProcessError:
        raise Unavailable(f"no image {reference} for the current tree "
                          "(bash image/build, or .ci/setup.d/50-image.sh)") from None
    name = f"peerpods-test-{target}-{uuid.uuid4().hex[:12]}"
    container = buildah("from", "--pull=never", "--name", name, reference).strip()
    try:
        root = Path(buildah("mount", container).strip())
        yield MountedImage(target, reference, root, inspected["OCIv1"]["config"])
    finally:
        subprocess.run(["buildah", "--root", STORE, "--runroot", RUNROOT, "rm", container],
                       capture_output=True, timeout=300)
