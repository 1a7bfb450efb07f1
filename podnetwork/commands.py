"""Running ``ip``/``tc``/``iptables`` (what netlink has no good interface for), optionally
inside another network namespace. Used by both ends of the pod network tunnel."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from podnetwork.errors import PodNetworkError

TIMEOUT = 30.0


class CommandError(PodNetworkError):
    """A command could not run, timed out or failed; the message names it and its stderr."""


def _exec(argv: Sequence[str], netns: str | None) -> subprocess.CompletedProcess[str]:
    full = ["nsenter", f"--net={netns}", "--", *argv] if netns else list(argv)
    try:
        return subprocess.run(full, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    except FileNotFoundError as exc:
        raise CommandError(f"{full[0]} is not installed: {exc}") from None
    except subprocess.TimeoutExpired:
        raise CommandError(f"{' '.join(argv)} timed out after {TIMEOUT:.0f}s") from None


def attempt(argv: Sequence[str], *, netns: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` and return its exit status and output, whatever the status."""
    return _exec(argv, netns)


def run(argv: Sequence[str], *, netns: str | None = None, check: bool = True) -> str:
    """Run ``argv`` (in the namespace at path ``netns`` when given); return its stdout.

    A non-zero exit raises :class:`CommandError` naming the command and its stderr, unless
    ``check`` is false.
    """
    proc = _exec(argv, netns)
    if check and proc.returncode != 0:
        where = f" (netns {netns})" if netns else ""
        raise CommandError(
            f"{' '.join(argv)}{where} failed with exit {proc.returncode}: {proc.stderr.strip()}"
        )
    return proc.stdout


def succeeds(argv: Sequence[str], *, netns: str | None = None) -> bool:
    """True when ``argv`` exits 0 (iptables ``-C``/``-S`` style checks)."""
    return _exec(argv, netns).returncode == 0
