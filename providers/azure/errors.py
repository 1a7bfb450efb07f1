"""ARM errors: which to retry, and how each becomes an error of :mod:`providers.base`.

azure-core exceptions never leave the ``providers.azure`` package. ARM reports quota and
capacity problems as HTTP 409 (raised as ``ResourceExistsError``) or as the error of a
failed long-running operation, so the branch is on the ARM error code, not the class.
"""

from __future__ import annotations

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

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

# No capacity, or a quota used up: retrying now does not help.
QUOTA_CODES = frozenset({
    "OperationNotAllowed",  # "Operation could not be completed as it results in exceeding
                            # approved ... Cores quota"
    "QuotaExceeded",
    "AllocationFailed",
    "ZonalAllocationFailed",
    "OverconstrainedAllocationRequest",
    "OverconstrainedZonalAllocationRequest",
    "SubnetIsFull",
    "PublicIPCountLimitReached",
})
SIZE_CODES = frozenset({"SkuNotAvailable", "InvalidVMSize", "VMSizeNotSupported"})
IMAGE_CODES = frozenset({
    "ImageNotFound", "GalleryImageNotFound", "InvalidImageReference",
    "CommunityGalleryImageNotFound",
})
AUTH_CODES = frozenset({
    "AuthorizationFailed", "AuthenticationFailed", "InvalidAuthenticationToken",
    "InvalidAuthenticationTokenTenant", "ExpiredAuthenticationToken",
    "SubscriptionNotFound", "LinkedAuthorizationFailed",
})
TRANSIENT_CODES = frozenset({"InternalServerError", "ServerTimeout", "RetryableError"})

# 429 comes back here only after azure-core's own retry policy (which honours Retry-After)
# gave up: keep going while the operation's time allows.
THROTTLE_BACKOFF = Backoff(base=1.0, cap=20.0, max_attempts=None)
# Connection failures and server errors: a few attempts (every call is idempotent: a VM is
# PUT under its own name), then ProviderUnavailable.
TRANSIENT_BACKOFF = Backoff(base=0.5, cap=5.0, max_attempts=4)


def error_code(exc: BaseException) -> str:
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None)
    return str(code) if code else ""


def _status(exc: BaseException) -> int:
    return int(getattr(exc, "status_code", None) or 0)


def _message(exc: BaseException) -> str:
    error = getattr(exc, "error", None)
    text = getattr(error, "message", None)
    if text:
        return str(text)
    return str(getattr(exc, "reason", None) or type(exc).__name__)


def classify(exc: Exception) -> Backoff | None:
    """The retry policy for ``exc``, or ``None`` when it must not be retried."""
    if isinstance(exc, ClientAuthenticationError):
        return None
    if isinstance(exc, HttpResponseError):
        status, code = _status(exc), error_code(exc)
        if status == 429 or code == "TooManyRequests":
            return THROTTLE_BACKOFF
        if code in QUOTA_CODES or code in SIZE_CODES:
            return None
        if status >= 500 or code in TRANSIENT_CODES:
            return TRANSIENT_BACKOFF
        return None
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        return TRANSIENT_BACKOFF
    return None


def translate(
    exc: Exception,
    *,
    action: str,
    instance_id: str | None = None,
    size: str | None = None,
    image_id: str | None = None,
) -> ProviderError:
    """Map an azure-core (or rate limiter) exception to the project's error tree."""
    settled = already_translated(exc, f"ARM {action}")
    if settled is not None:
        return settled
    if isinstance(exc, ClientAuthenticationError) and not error_code(exc):
        return ConfigError(f"ARM {action}: credentials rejected ({_message(exc)})")
    if isinstance(exc, HttpResponseError):
        return _translate_http(exc, action, instance_id, size, image_id)
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        return ProviderUnavailable(f"ARM {action}: endpoint unreachable ({exc})")
    return ProviderError(f"ARM {action} failed ({type(exc).__name__}: {exc})")


def _translate_http(
    exc: HttpResponseError, action: str, instance_id: str | None, size: str | None,
    image_id: str | None,
) -> ProviderError:
    status, code, message = _status(exc), error_code(exc), _message(exc)
    detail = f"{code}: {message}" if code else message
    if status == 429 or code == "TooManyRequests":
        return Throttled(f"ARM {action} still throttled when time ran out ({detail})")
    if code in QUOTA_CODES:
        subject = f"size {size}" if size else "this request"
        return QuotaExceeded(f"ARM {action}: no capacity or quota for {subject} ({detail})")
    if code in SIZE_CODES:
        return InvalidSpec(f"VM size {size or '?'} cannot be used here ({detail})")
    if code in IMAGE_CODES:
        return InvalidSpec(f"image {image_id or '?'} cannot be used ({detail})")
    if code in AUTH_CODES or status in (401, 403):
        return ConfigError(f"ARM {action}: access refused ({detail})")
    if status == 404 and instance_id is not None:
        return InstanceNotFound(instance_id)
    if status == 404 and image_id is not None:
        return InvalidSpec(f"image {image_id} not found ({detail})")
    if status >= 500 or code in TRANSIENT_CODES:
        return ProviderUnavailable(f"ARM {action}: server error ({detail})")
    if status == 400 or code.startswith("Invalid"):
        return InvalidSpec(f"ARM {action}: {detail}")
    return ProviderError(f"ARM {action} failed ({detail})")


def not_found(exc: Exception) -> bool:
    return isinstance(exc, HttpResponseError) and _status(exc) == 404
