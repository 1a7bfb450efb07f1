"""Running ``tc``/``iptables`` (commands netlink has no good interface for) in a namespace."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from adaptor.network.errors import WorkerNetworkError

_TIMEOUT = 30.0


def run(argv: Sequence[str], *, netns: str | None = None, check: bool = True) -> str:
    """Run ``argv`` (inside the network namespace at path ``netns`` when given); return stdout.

    A non-zero exit raises :class:`WorkerNetworkError` naming the command and its stderr,
    unless ``check`` is false.
    """
    full = ["nsenter", f"--net={netns}", "--", *argv] if netns else list(argv)
    try:
        proc = subprocess.run(full, capture_output=True, text=True, timeout=_TIMEOUT, check=False)
    except FileNotFoundError as exc:
        raise WorkerNetworkError(f"{full[0]} is not installed: {exc}") from None
    except subprocess.TimeoutExpired:
        raise WorkerNetworkError(f"{' '.join(argv)} timed out after {_TIMEOUT:.0f}s") from None
    if check and proc.returncode != 0:
        where = f" (netns {netns})" if netns else ""
        raise WorkerNetworkError(
            f"{' '.join(argv)}{where} failed with exit {proc.returncode}: {proc.stderr.strip()}"
        )
    return proc.stdout


def succeeds(argv: Sequence[str], *, netns: str | None = None) -> bool:
    """True when ``argv`` exits 0 (used for iptables ``-C`` style checks)."""
    full = ["nsenter", f"--net={netns}", "--", *argv] if netns else list(argv)
    try:
        proc = subprocess.run(full, capture_output=True, timeout=_TIMEOUT, check=False)
    except FileNotFoundError as exc:
        raise WorkerNetworkError(f"{full[0]} is not installed: {exc}") from None
    except subprocess.TimeoutExpired:
        raise WorkerNetworkError(f"{' '.join(argv)} timed out after {_TIMEOUT:.0f}s") from None
    return proc.returncode == 0
