"""Errors of the guest components, one branch of the project's tree.

::

    GuestError                  (runtime.errors.PeerPodsError)
    ├── GuestConfigError        aa.toml / cdh.toml / flags name nothing usable
    ├── AttesterError           the TEE would not produce evidence
    ├── ResourceUriError        a kbs:// resource URI is malformed or escapes its repository
    └── KbsError                the KBS protocol failed
        ├── HandshakeError      /auth + /attest did not yield a token
        ├── ResourceNotFound    the KBS answered 404
        ├── Unauthorized        still 401 after re-attesting
        └── ResponseError       a reply is malformed, oversized or does not decrypt
"""

from __future__ import annotations

from runtime.errors import PeerPodsError


class GuestError(PeerPodsError):
    """Base of every error the guest components raise on purpose."""


class GuestConfigError(GuestError, ValueError):
    """A config file, flag or kernel parameter cannot be used."""


class AttesterError(GuestError):
    """The TEE (or its kernel interface) did not produce evidence."""


class ResourceUriError(GuestError, ValueError):
    """A ``kbs://`` resource URI is malformed or escapes its repository."""


class KbsError(GuestError):
    """The KBS protocol failed."""


class HandshakeError(KbsError):
    """The RCAR handshake (/auth then /attest) did not yield a token."""


class ResourceNotFound(KbsError):
    """The KBS answered 404 for a resource."""


class Unauthorized(KbsError):
    """The KBS kept answering 401, also after re-attesting."""


class ResponseError(KbsError):
    """A KBS reply is malformed, too large, or its JWE does not decrypt."""
