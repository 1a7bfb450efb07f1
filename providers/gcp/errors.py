"""Compute Engine errors: which to retry, and how each becomes an error of :mod:`providers.base`.

google-api-core exceptions never leave the ``providers.gcp`` package: every call site passes
its failure through :func:`translate`. A zone operation that finished with errors becomes an
:class:`OperationFailed` first (the SDK's ``wait`` does not raise for it).
"""

from __future__ import annotations

from collections.abc import Sequence

import requests
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc

from providers.base import (
    ConfigError,
    InstanceNotFound,
    InvalidSpec,
    ProviderError,
    ProviderUnavailable,
    QuotaExceeded,
    Throttled,
)
from providers.kit import already_translated
from providers.ratelimit import Backoff

THROTTLE_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
QUOTA_REASONS = frozenset({"quotaExceeded", "QUOTA_EXCEEDED"})
# Operation error codes for a zone without capacity or a quota used up: retrying at once does
# not help, so fail fast with a message that says which.
POOL_CODES = frozenset({
    "ZONE_RESOURCE_POOL_EXHAUSTED",
    "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
    "RESOURCE_POOL_EXHAUSTED",
})
QUOTA_CODES = frozenset({"QUOTA_EXCEEDED"})

THROTTLE_BACKOFF = Backoff(base=0.2, cap=10.0, max_attempts=None)
# Connection failures and server errors: a few attempts. Safe for insert: it carries a
# requestId, which GCE answers with the first attempt's operation.
TRANSIENT_BACKOFF = Backoff(base=0.2, cap=2.0, max_attempts=4)


class OperationFailed(Exception):
    """A zone operation finished with errors (``op.error.errors``)."""

    def __init__(self, kind: str, status: int, errors: Sequence[tuple[str, str]]) -> None:
        self.kind = kind
        self.status = status
        self.errors = tuple(errors)
        described = "; ".join(f"{code}: {message}" for code, message in self.errors)
        super().__init__(f"{kind} operation failed (HTTP {status}): {described}")

    @property
    def codes(self) -> set[str]:
        return {code for code, _ in self.errors}


def reasons(exc: BaseException) -> set[str]:
    """The ``error.errors[].reason`` words of an API error (and its ErrorInfo reason)."""
    found: set[str] = set()
    if isinstance(exc, gexc.GoogleAPICallError):
        for item in exc.errors or ():
            if isinstance(item, dict) and item.get("reason"):
                found.add(str(item["reason"]))
        if exc.reason:
            found.add(str(exc.reason))
    return found


def is_throttled(exc: BaseException) -> bool:
    if isinstance(exc, gexc.TooManyRequests):
        return True
    return isinstance(exc, gexc.Forbidden) and bool(reasons(exc) & THROTTLE_REASONS)


_TRANSIENT = (requests.ConnectionError, requests.Timeout, auth_exc.TransportError)


def classify(exc: Exception) -> Backoff | None:
    """The retry policy for ``exc``, or ``None`` when it must not be retried."""
    if is_throttled(exc):
        return THROTTLE_BACKOFF
    if isinstance(exc, (gexc.ServerError, *_TRANSIENT)):
        return TRANSIENT_BACKOFF
    return None


def _message(exc: gexc.GoogleAPICallError) -> str:
    return str(exc.message or exc)


def translate(
    exc: Exception,
    *,
    action: str,
    instance_id: str | None = None,
    machine_type: str | None = None,
    image: str | None = None,
) -> ProviderError:
    """Map a google-api-core (or rate limiter, or operation) exception to the error tree."""
    settled = already_translated(exc, f"GCE {action}")
    if settled is not None:
        return settled
    if isinstance(exc, OperationFailed):
        if exc.status == 404 and instance_id is not None:
            return InstanceNotFound(instance_id)  # deleted by someone else meanwhile
        return _operation_error(exc, action, machine_type)
    if is_throttled(exc):
        return Throttled(f"GCE {action} still rate limited when time ran out ({exc})")
    if isinstance(exc, gexc.GoogleAPICallError):
        if reasons(exc) & QUOTA_REASONS:
            return QuotaExceeded(f"GCE {action}: quota exceeded ({_message(exc)})")
        if isinstance(exc, gexc.NotFound):
            if instance_id is not None:
                return InstanceNotFound(instance_id)
            if image is not None:
                return InvalidSpec(f"image {image} cannot be used ({_message(exc)})")
            return InvalidSpec(f"GCE {action}: not found ({_message(exc)})")
        if isinstance(exc, (gexc.Unauthorized, gexc.Forbidden)):
            return ConfigError(f"GCE {action}: credentials rejected ({_message(exc)})")
        if isinstance(exc, gexc.ServerError):
            return ProviderUnavailable(f"GCE {action}: server error ({_message(exc)})")
        if isinstance(exc, gexc.BadRequest):
            return InvalidSpec(f"GCE {action}: {_message(exc)}")
        return ProviderError(f"GCE {action} failed ({_message(exc)})")
    if isinstance(exc, auth_exc.DefaultCredentialsError):
        return ConfigError(f"GCE {action}: no usable GCP credentials ({exc})")
    if isinstance(exc, auth_exc.RefreshError):
        return ConfigError(f"GCE {action}: GCP credentials rejected ({exc})")
    if isinstance(exc, _TRANSIENT):
        return ProviderUnavailable(f"GCE {action}: endpoint unreachable ({type(exc).__name__})")
    return ProviderError(f"GCE {action} failed ({type(exc).__name__}: {exc})")


def _operation_error(exc: OperationFailed, action: str, machine_type: str | None) -> ProviderError:
    subject = f"machine type {machine_type}" if machine_type else "this request"
    if exc.codes & POOL_CODES:
        return QuotaExceeded(
            f"GCE {action}: the zone has no capacity for {subject} right now; try another zone "
            f"or machine type, or later ({exc})"
        )
    if exc.codes & QUOTA_CODES:
        return QuotaExceeded(f"GCE {action}: quota exceeded for {subject} ({exc})")
    if exc.status == 404:
        return InvalidSpec(f"GCE {action}: {exc}")
    if exc.status >= 500:
        return ProviderUnavailable(f"GCE {action}: {exc}")
    if 400 <= exc.status < 500:
        return InvalidSpec(f"GCE {action}: {exc}")
    return ProviderError(f"GCE {action}: {exc}")
