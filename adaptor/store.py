"""The sandbox state store: one JSON record per sandbox, ``<pods-dir>/<sid>/sandbox.json``.

Records are written atomically (temp file, fsync, rename, fsync of the directory) with mode
0600, because they carry the rendered user-data and with it the VM's TLS key. A record that
cannot be read or parsed is renamed to ``sandbox.json.corrupt-<unix time>`` and reported;
loading carries on with the others.

A per-sandbox lock file (``<pods-dir>/<sid>/start.lock``, ``flock``) is held while a StartVM
runs. The kernel drops it when the process dies, so after a restart a record in state
``starting`` whose lock is free belongs to a StartVM that died with its daemon, while a held
lock means another adaptor (rolling update) is still working on it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import time
from dataclasses import dataclass

from adaptor.sandbox import APF_COPY_NAME, SandboxRecord

log = logging.getLogger(__name__)

RECORD_NAME = "sandbox.json"
LOCK_NAME = "start.lock"


@dataclass(frozen=True, slots=True)
class LoadResult:
    records: tuple[SandboxRecord, ...]
    corrupt: tuple[str, ...]  # paths the unreadable records were moved to


def write_private(path: str, data: str | bytes) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600 (temp file, fsync, rename)."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o700, exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    payload = data.encode() if isinstance(data, str) else data
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class SandboxStore:
    def __init__(self, pods_dir: str) -> None:
        self.pods_dir = pods_dir

    def pod_dir(self, sandbox_id: str) -> str:
        return os.path.join(self.pods_dir, sandbox_id)

    def path(self, sandbox_id: str) -> str:
        return os.path.join(self.pod_dir(sandbox_id), RECORD_NAME)

    def save(self, record: SandboxRecord) -> None:
        write_private(self.path(record.sandbox_id), record.to_json())

    def delete(self, sandbox_id: str) -> None:
        """Remove the record and the apf.json copy (it holds the VM's key), then the start
        lock and the directory unless another process is using them."""
        pod_dir = self.pod_dir(sandbox_id)
        for name in (RECORD_NAME, APF_COPY_NAME):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(pod_dir, name))
        fd = self.try_start_lock(sandbox_id) if os.path.isdir(pod_dir) else None
        if fd is None:
            return  # another process holds the lock (it finds no record) or no dir is left
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(pod_dir, LOCK_NAME))
        finally:
            self.release_start_lock(fd)
        with contextlib.suppress(OSError):  # not empty (e.g. a socket still there): keep it
            os.rmdir(pod_dir)

    def load(self, sandbox_id: str) -> SandboxRecord | None:
        """The record of one sandbox, ``None`` when there is none (or it is corrupt)."""
        path = self.path(sandbox_id)
        try:
            return self._read(path)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self._set_aside(sandbox_id, path, exc)
            return None

    def load_all(self) -> LoadResult:
        records: list[SandboxRecord] = []
        corrupt: list[str] = []
        try:
            names = sorted(os.listdir(self.pods_dir))
        except FileNotFoundError:
            return LoadResult((), ())
        for name in names:
            path = os.path.join(self.pods_dir, name, RECORD_NAME)
            try:
                record = self._read(path)
            except FileNotFoundError:
                continue
            except NotADirectoryError:
                continue
            except (OSError, ValueError, KeyError, TypeError) as exc:
                moved = self._set_aside(name, path, exc)
                if moved:
                    corrupt.append(moved)
                continue
            if record.sandbox_id != name:
                moved = self._set_aside(
                    name, path, ValueError(f"record names sandbox {record.sandbox_id!r}")
                )
                if moved:
                    corrupt.append(moved)
                continue
            records.append(record)
        return LoadResult(tuple(records), tuple(corrupt))

    @staticmethod
    def _read(path: str) -> SandboxRecord:
        with open(path, "rb") as handle:
            return SandboxRecord.from_json(handle.read())

    @staticmethod
    def _set_aside(sandbox_id: str, path: str, exc: BaseException) -> str:
        target = f"{path}.corrupt-{int(time.time())}"
        try:
            os.replace(path, target)
        except OSError as move_exc:
            log.error("sandbox=%s: unreadable record %s (%s) could not be moved aside: %s",
                      sandbox_id, path, _reason(exc), move_exc)
            return ""
        log.error("sandbox=%s: unreadable record %s (%s); kept as %s and skipped",
                  sandbox_id, path, _reason(exc), target)
        return target

    # ---------------------------------------------------------------- start locks
    def try_start_lock(self, sandbox_id: str) -> int | None:
        """Take the sandbox's start lock: its fd, or ``None`` when another process holds it.

        Within one process, callers serialise per sandbox before taking it."""
        fd = self._open_lock(sandbox_id)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return None
            raise
        return fd

    @staticmethod
    def release_start_lock(fd: int) -> None:
        os.close(fd)  # closing the only descriptor drops the lock

    def start_lock_held(self, sandbox_id: str) -> bool:
        """True when another process holds the sandbox's start lock."""
        fd = self.try_start_lock(sandbox_id)
        if fd is None:
            return True
        self.release_start_lock(fd)
        return False

    def _open_lock(self, sandbox_id: str) -> int:
        directory = self.pod_dir(sandbox_id)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        return os.open(os.path.join(directory, LOCK_NAME),
                       os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
