"""Linux configfs-tsm reports (``/sys/kernel/config/tsm/report``, kernel >= 6.7).

One request = one fresh sub-directory: read ``provider``, write ``inblob`` (at most 64
bytes), read ``outblob`` (and ``auxblob`` if asked), then check ``generation``. Unlike
upstream, which fails when another writer raced it, a generation that moved by more than
our own write is retried in a new directory (``attempts`` times in all).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from guest.errors import AttesterError

TSM_REPORT_PATH = Path("/sys/kernel/config/tsm/report")
INBLOB_MAX = 64
# provider file content -> kbs-types tee name
PROVIDERS = {"sev_guest": "snp", "tdx_guest": "tdx", "arm_cca_guest": "cca"}


class ConfigFs:
    """The few filesystem operations configfs-tsm needs (a seam for a fake tree in tests)."""

    def mkdir(self, path: Path) -> None:
        os.mkdir(path)

    def rmdir(self, path: Path) -> None:
        os.rmdir(path)

    def read(self, path: Path) -> bytes:
        return path.read_bytes()

    def write(self, path: Path, data: bytes) -> None:
        with open(path, "wb", buffering=0) as f:
            f.write(data)

    def exists(self, path: Path) -> bool:
        return path.exists()


@dataclass(frozen=True, slots=True)
class TsmReport:
    provider: str
    outblob: bytes
    auxblob: bytes | None


class TsmReports:
    def __init__(
        self, root: Path = TSM_REPORT_PATH, *, fs: ConfigFs | None = None, attempts: int = 3
    ) -> None:
        self.root = root
        self.fs = fs or ConfigFs()
        self.attempts = attempts

    def available(self) -> bool:
        return self.fs.exists(self.root)

    def provider(self) -> str | None:
        """The kbs-types tee name of the provider, or None without configfs-tsm."""
        if not self.available():
            return None
        path = self._new_dir()
        try:
            return self._provider(path)
        finally:
            self._remove(path)

    def report(
        self, inblob: bytes, *, wanted: str, privlevel: int | None = None, aux: bool = False
    ) -> TsmReport:
        if not inblob or len(inblob) > INBLOB_MAX:
            raise AttesterError(f"configfs-tsm: inblob must be 1..{INBLOB_MAX} bytes")
        for _ in range(self.attempts):
            report = self._one(inblob, wanted, privlevel, aux)
            if report is not None:
                return report
        raise AttesterError(
            f"configfs-tsm: generation kept changing under us ({self.attempts} attempts)"
        )

    def _one(
        self, inblob: bytes, wanted: str, privlevel: int | None, aux: bool
    ) -> TsmReport | None:
        path = self._new_dir()
        try:
            provider = self._provider(path)
            if provider != wanted:
                raise AttesterError(f"configfs-tsm: provider is {provider}, wanted {wanted}")
            if privlevel is not None:
                self._write(path, "privlevel", str(privlevel).encode())
            before = self._generation(path)
            self._write(path, "inblob", inblob)
            outblob = self._read(path, "outblob")
            auxblob = self._read(path, "auxblob") if aux else None
            if self._generation(path) != before + 1:
                return None  # another writer raced us: retry in a fresh directory
            return TsmReport(provider, outblob, auxblob)
        finally:
            self._remove(path)

    def _new_dir(self) -> Path:
        path = self.root / f"peerpods-{uuid.uuid4().hex}"
        try:
            self.fs.mkdir(path)
        except OSError as exc:
            raise AttesterError(f"configfs-tsm: cannot create a report: {exc}") from exc
        return path

    def _remove(self, path: Path) -> None:
        try:
            self.fs.rmdir(path)
        except OSError:
            pass  # the kernel drops it with the last reference anyway

    def _provider(self, path: Path) -> str:
        raw = self._read(path, "provider").decode(errors="replace").strip()
        try:
            return PROVIDERS[raw]
        except KeyError:
            raise AttesterError(f"configfs-tsm: unknown provider {raw!r}") from None

    def _generation(self, path: Path) -> int:
        raw = self._read(path, "generation")
        try:
            return int(raw.strip())
        except ValueError:
            raise AttesterError(f"configfs-tsm: bad generation {raw[:20]!r}") from None

    def _read(self, path: Path, name: str) -> bytes:
        try:
            return self.fs.read(path / name)
        except OSError as exc:
            raise AttesterError(f"configfs-tsm: cannot read {name}: {exc}") from exc

    def _write(self, path: Path, name: str, data: bytes) -> None:
        try:
            self.fs.write(path / name, data)
        except OSError as exc:
            raise AttesterError(f"configfs-tsm: cannot write {name}: {exc}") from exc
