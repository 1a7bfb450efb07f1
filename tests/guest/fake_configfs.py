"""A fake configfs-tsm tree in a temporary directory.

Real directories and files; what the kernel does on ``mkdir`` (populate the attributes) and
on a write to ``inblob`` (bump ``generation``, produce ``outblob``) happens in the
``ConfigFs`` hooks, the seam the attester uses for its filesystem calls.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from guest.attesters.tsm import ConfigFs


class FakeTsmConfigFs(ConfigFs):
    def __init__(self, provider: str = "tdx_guest", *, races: int = 0) -> None:
        self.provider = provider
        self.races = races  # how many reports another writer disturbs
        self.made: list[Path] = []

    def mkdir(self, path: Path) -> None:
        super().mkdir(path)
        self.made.append(path)
        (path / "provider").write_text(self.provider + "\n")
        (path / "generation").write_text("0\n")

    def rmdir(self, path: Path) -> None:
        for child in path.iterdir():  # configfs attributes vanish with the directory
            child.unlink()
        super().rmdir(path)

    def write(self, path: Path, data: bytes) -> None:
        super().write(path, data)
        report = path.parent
        generation = int((report / "generation").read_text()) + 1
        if path.name == "inblob":
            quote = b"QUOTE" + hashlib.sha256(data).digest() + data
            (report / "outblob").write_bytes(quote)
            (report / "auxblob").write_bytes(b"CERTS")
            if self.races:
                self.races -= 1
                generation += 1  # someone else wrote inblob meanwhile
        (report / "generation").write_text(f"{generation}\n")


def fake_quote(inblob: bytes) -> bytes:
    return b"QUOTE" + hashlib.sha256(inblob).digest() + inblob
