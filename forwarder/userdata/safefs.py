"""Writes confined to one directory: no symlinks followed, atomic replacement.

Every path is resolved component by component from an open directory descriptor with
``O_NOFOLLOW``, so neither a symlink planted at the target nor one in a parent directory can
redirect a write outside the directory. Files are written to a temporary name and renamed
into place, so a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from pathlib import Path
from types import TracebackType

from forwarder.userdata.config import DIR_MODE
from forwarder.userdata.errors import UnsafePathError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _components(relpath: str) -> list[str]:
    parts = relpath.split("/")
    for part in parts:
        if part in ("", ".", "..") or "\0" in part:
            raise UnsafePathError(f"{relpath[:200]!r} is not a plain relative path")
    return parts


class SafeDir:
    """An open directory; paths given to its methods are relative and never leave it."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd = fd
        self.path = path

    @classmethod
    def open(cls, path: Path) -> SafeDir:
        """Open (creating it and its parents if needed) ``path``, which must not be a symlink."""
        os.makedirs(path, DIR_MODE, exist_ok=True)
        try:
            fd = os.open(path, _DIR_FLAGS)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnsafePathError(f"{path} is a symlink or not a directory") from None
            raise
        return cls(fd, path)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> SafeDir:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _open_parent(self, parts: list[str], *, create: bool) -> int:
        """Descriptor of the directory holding ``parts[-1]`` (the caller closes it)."""
        fd = os.dup(self._fd)
        try:
            for part in parts[:-1]:
                created = False
                if create:
                    try:
                        os.mkdir(part, DIR_MODE, dir_fd=fd)
                        created = True
                    except FileExistsError:
                        pass
                try:
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise UnsafePathError(
                            f"{part!r} is a symlink or not a directory"
                        ) from None
                    raise
                os.close(fd)
                fd = child
                if created:
                    os.fchmod(fd, DIR_MODE)  # exact mode, whatever the umask
            return fd
        except BaseException:
            os.close(fd)
            raise

    def write(self, relpath: str, data: bytes, mode: int) -> None:
        """Atomically replace ``relpath`` with ``data`` at ``mode``.

        Raises :class:`UnsafePathError` when the target or a parent is a symlink or the
        target is something other than a regular file; nothing is written then.
        """
        parts = _components(relpath)
        name = parts[-1]
        dir_fd = self._open_parent(parts, create=True)
        try:
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                pass
            else:
                if stat.S_ISLNK(st.st_mode):
                    raise UnsafePathError(f"{relpath} is a symlink")
                if not stat.S_ISREG(st.st_mode):
                    raise UnsafePathError(f"{relpath} exists and is not a regular file")
            tmp = f".{name}.{secrets.token_hex(6)}.tmp"
            fd = os.open(
                tmp,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                mode,
                dir_fd=dir_fd,
            )
            try:
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fchmod(fd, mode)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dir_fd)
                raise
        finally:
            os.close(dir_fd)

    def read(self, relpath: str, limit: int) -> bytes:
        """Read a regular file (not through a symlink) of at most ``limit`` bytes.

        ``FileNotFoundError`` propagates when it does not exist.
        """
        parts = _components(relpath)
        dir_fd = self._open_parent(parts, create=False)
        try:
            try:
                fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise UnsafePathError(f"{relpath} is a symlink") from None
                raise
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise UnsafePathError(f"{relpath} is not a regular file")
                chunks: list[bytes] = []
                size = 0
                while size <= limit:
                    chunk = os.read(fd, min(65536, limit + 1 - size))
                    if not chunk:
                        break
                    chunks.append(chunk)
                    size += len(chunk)
            finally:
                os.close(fd)
        finally:
            os.close(dir_fd)
        if size > limit:
            raise OSError(errno.EFBIG, f"larger than {limit} bytes", relpath)
        return b"".join(chunks)

    def exists(self, relpath: str) -> bool:
        """Whether ``relpath`` exists (a symlink counts, and is not followed)."""
        parts = _components(relpath)
        try:
            dir_fd = self._open_parent(parts, create=False)
        except (FileNotFoundError, UnsafePathError):
            return False
        try:
            os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        finally:
            os.close(dir_fd)
        return True
