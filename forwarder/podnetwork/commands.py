"""Running ``ip``/``iptables`` commands, optionally inside another network namespace."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from forwarder.podnetwork.errors import PodNetworkError

_TIMEOUT = 30.0


def _exec(argv: Sequence[str], netns: str | None) -> subprocess.CompletedProcess[str]:
    full = ["nsenter", f"--net={netns}", "--", *argv] if netns else list(argv)
    try:
        return subprocess.run(full, capture_output=True, text=True, timeout=_TIMEOUT, check=False)
    except FileNotFoundError as exc:
        raise PodNetworkError(f"{full[0]} is not installed: {exc}") from None
    except subprocess.TimeoutExpired:
        raise PodNetworkError(f"{' '.join(argv)} timed out after {_TIMEOUT:.0f}s") from None


def run(argv: Sequence[str], *, netns: str | None = None) -> str:
    """Run ``argv`` (in the namespace at path ``netns`` when given); return its stdout.

    A non-zero exit raises :class:`PodNetworkError` naming the command and its stderr.
    """
    proc = _exec(argv, netns)
    if proc.returncode != 0:
        where = f" (netns {netns})" if netns else ""
        raise PodNetworkError(
            f"{' '.join(argv)}{where} failed with exit {proc.returncode}: {proc.stderr.strip()}"
        )
    return proc.stdout


def succeeds(argv: Sequence[str], *, netns: str | None = None) -> bool:
    """True when ``argv`` exits 0 (iptables ``-C``/``-S`` checks)."""
    return _exec(argv, netns).returncode == 0
