"""EC2 errors: which to retry, and how each becomes an error of :mod:`providers.base`.

botocore exceptions never leave the ``providers.aws`` package: every call site passes its
failure through :func:`translate`.
"""

from __future__ import annotations

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
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

THROTTLE_CODES = frozenset({
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
})

# No capacity, or an account quota used up: retrying now does not help, so fail fast.
QUOTA_CODES = frozenset({
    "InsufficientInstanceCapacity",
    "InsufficientCapacity",
    "InsufficientHostCapacity",
    "InsufficientReservedInstanceCapacity",
    "InstanceLimitExceeded",
    "VcpuLimitExceeded",
    "MaxSpotInstanceCountExceeded",
    "ResourceLimitExceeded",
    "ServiceQuotaExceededException",
    "VolumeLimitExceeded",
    "InsufficientFreeAddressesInSubnet",
    "AddressLimitExceeded",
})

INSTANCE_NOT_FOUND_CODES = frozenset({"InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"})

AUTH_CODES = frozenset({
    "AuthFailure",
    "UnauthorizedOperation",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "RequestExpired",
    "OptInRequired",
})

# Throttling: keep going while the caller's time allows.
THROTTLE_BACKOFF = Backoff(base=0.1, cap=5.0, max_attempts=None)
# Connection failures and server errors: a few attempts, then ProviderUnavailable. Safe for
# RunInstances because every create carries a ClientToken.
TRANSIENT_BACKOFF = Backoff(base=0.2, cap=2.0, max_attempts=4)

_TRANSIENT_EXCEPTIONS = (
    EndpointConnectionError, ConnectionError, HTTPClientError, ReadTimeoutError,
)


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def _status(exc: ClientError) -> int:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return int(status or 0)


def _message(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message", "")) or error_code(exc)


def classify(exc: Exception) -> Backoff | None:
    """The retry policy for ``exc``, or ``None`` when it must not be retried."""
    if isinstance(exc, ClientError):
        code = error_code(exc)
        if code in THROTTLE_CODES:
            return THROTTLE_BACKOFF
        if code in QUOTA_CODES:
            return None
        if _status(exc) >= 500 or code in ("InternalError", "Unavailable", "ServiceUnavailable"):
            return TRANSIENT_BACKOFF
        return None
    if isinstance(exc, _TRANSIENT_EXCEPTIONS):
        return TRANSIENT_BACKOFF
    return None


def translate(
    exc: Exception,
    *,
    action: str,
    instance_id: str | None = None,
    instance_type: str | None = None,
    image_id: str | None = None,
) -> ProviderError:
    """Map a botocore (or rate limiter) exception to the project's error tree."""
    settled = already_translated(exc, f"EC2 {action}")
    if settled is not None:
        return settled
    if isinstance(exc, ClientError):
        code = error_code(exc)
        message = _message(exc)
        if code in THROTTLE_CODES:
            return Throttled(f"EC2 {action} still throttled when time ran out ({code}: {message})")
        if code in QUOTA_CODES:
            subject = f"instance type {instance_type}" if instance_type else "this request"
            return QuotaExceeded(
                f"EC2 {action}: no capacity or quota for {subject} ({code}: {message})"
            )
        if code in INSTANCE_NOT_FOUND_CODES:
            return InstanceNotFound(instance_id or "?")
        if code.startswith("InvalidAMIID"):
            return InvalidSpec(f"AMI {image_id or '?'} cannot be used ({code}: {message})")
        if code in ("InvalidInstanceType", "Unsupported") and instance_type:
            return InvalidSpec(
                f"instance type {instance_type} cannot be used ({code}: {message})"
            )
        if code in AUTH_CODES:
            return ConfigError(f"EC2 {action}: credentials rejected ({code}: {message})")
        if _status(exc) >= 500:
            return ProviderUnavailable(f"EC2 {action}: server error ({code}: {message})")
        if code.startswith(("Invalid", "Missing", "Unknown", "IdempotentParameterMismatch")):
            return InvalidSpec(f"EC2 {action}: {code}: {message}")
        return ProviderError(f"EC2 {action} failed ({code}: {message})")
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return ConfigError(f"EC2 {action}: no usable AWS credentials ({exc})")
    if isinstance(exc, NoRegionError):
        return ConfigError(f"EC2 {action}: no AWS region configured (AWS_REGION)")
    if isinstance(exc, ProfileNotFound):
        return ConfigError(f"EC2 {action}: {exc}")
    if isinstance(exc, _TRANSIENT_EXCEPTIONS):
        return ProviderUnavailable(f"EC2 {action}: endpoint unreachable ({exc})")
    if isinstance(exc, BotoCoreError):
        return ProviderError(f"EC2 {action} failed ({exc})")
    return ProviderError(f"EC2 {action} failed ({type(exc).__name__}: {exc})")
