"""Errors of ``process-user-data``."""

from __future__ import annotations


class ProvisionError(Exception):
    """Provisioning failed; the process exits non-zero with this message."""


class FetchError(Exception):
    """One attempt to fetch user-data failed (retried until the fetch timeout)."""


class UnsafePathError(Exception):
    """A write target is a symlink, not a regular file, or escapes its directory."""
