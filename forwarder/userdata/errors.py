"""Errors of ``process-user-data``."""

from __future__ import annotations

from runtime.errors import ForwarderError


class ProvisionError(ForwarderError):
    """Provisioning failed; the process exits non-zero with this message."""


class FetchError(ForwarderError):
    """One attempt to fetch user-data failed (retried until the fetch timeout)."""


class UnsafePathError(ForwarderError):
    """A write target is a symlink, not a regular file, or escapes its directory."""
