"""Bind initdata to the TPM: extend PCR 8 (SHA-256 bank) with the digest's first 32 bytes.

Off unless ``--extend-pcr8`` / ``PUD_EXTEND_PCR8`` is set: upstream's process-user-data only
writes the digest and its image extends PCR 8 itself, so extending here too would extend it
twice in an upstream image.

Same command as upstream's pod VM image runs after ``process-user-data``::

    tpm2_pcrextend 8:sha256=$(head -c64 /run/peerpod/initdata.digest)

A marker file in the peerpod dir (a tmpfs, cleared at boot like the PCRs) keeps a second run
in the same boot from extending again, which would leave PCR 8 matching no initdata.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
from pathlib import Path

from forwarder.userdata.config import FILE_MODE
from forwarder.userdata.errors import ProvisionError, UnsafePathError
from forwarder.userdata.safefs import SafeDir

log = logging.getLogger(__name__)

MARKER_NAME = ".pcr8-extended"
COMMAND_TIMEOUT = 60.0
_HEX64 = re.compile(r"[0-9a-f]{64}")


def pcrextend_argument(digest_hex: str) -> str:
    head = digest_hex[:64]
    if not _HEX64.fullmatch(head):
        raise ProvisionError("initdata digest is not lowercase hex of at least 32 bytes")
    return f"8:sha256={head}"


def _present(path: Path) -> bool:
    return path.exists()


async def extend_pcr8(
    root: SafeDir, digest_hex: str, *, enabled: bool, device: Path | None, command: str
) -> bool:
    """Extend PCR 8 when turned on and a TPM and the command are present. Returns whether it
    extended; a failing command is a :class:`ProvisionError` (fail-closed)."""
    argument = pcrextend_argument(digest_hex)
    if not enabled:
        log.info("PCR 8: extending is off (--extend-pcr8); the image's unit extends it")
        return False
    if device is None:
        log.info("PCR 8: TPM use disabled; not extending")
        return False
    if not _present(device):
        log.info("PCR 8: no TPM at %s; not extending", device)
        return False
    executable = shutil.which(command)
    if executable is None:
        log.info("PCR 8: %s not found; not extending", command)
        return False
    if root.exists(MARKER_NAME):
        log.warning("PCR 8: already extended during this boot; not extending again")
        return False
    try:
        proc = await asyncio.create_subprocess_exec(
            executable,
            argument,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise ProvisionError(f"cannot run {executable}: {exc}") from None
    try:
        async with asyncio.timeout(COMMAND_TIMEOUT):
            _, stderr = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise ProvisionError(f"{executable} did not finish within {COMMAND_TIMEOUT:g}s") from None
    if proc.returncode != 0:
        detail = stderr.decode("utf-8", errors="replace").strip().splitlines()
        raise ProvisionError(
            f"{executable} {argument} exited with {proc.returncode}"
            + (f": {detail[-1][:300]}" if detail else "")
        )
    try:
        root.write(MARKER_NAME, argument.encode("ascii") + b"\n", FILE_MODE)
    except (OSError, UnsafePathError) as exc:
        log.warning("PCR 8: extended, but cannot record it: %s", exc)
    log.info("PCR 8: extended with %s", argument)
    return True
