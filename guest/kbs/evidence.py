"""The runtime-data binding (PROTOCOLS.md §4.4): JCS of the runtime data, hashed."""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785

from guest.errors import KbsError

# kbs-types HashAlgorithm::list_all(), sent as "supported-hash-algorithms"
HASH_ALGORITHMS = ("sha256", "sha384", "sha512", "sm3")
DEFAULT_HASH = "sha384"


def digest(algorithm: str, data: bytes) -> bytes:
    if algorithm not in HASH_ALGORITHMS:
        raise KbsError(f"unsupported hash algorithm {algorithm!r}")
    return hashlib.new(algorithm, data).digest()


def runtime_data_digest(
    algorithm: str, nonce: str, tee_pubkey: dict[str, Any], additional_evidence: str
) -> bytes:
    """Report data of the primary attester."""
    value: dict[str, Any] = {
        "tee-pubkey": tee_pubkey,
        "nonce": nonce,
        "additional-evidence": additional_evidence,
    }
    return digest(algorithm, rfc8785.dumps(value))


def device_runtime_data_digest(algorithm: str, nonce: str, tee_pubkey: dict[str, Any]) -> bytes:
    """Report data of additional (device) attesters: no ``additional-evidence`` key."""
    return digest(algorithm, rfc8785.dumps({"nonce": nonce, "tee-pubkey": tee_pubkey}))


def selected_hash(extra_params: Any) -> str:
    """The hash the KBS selected in the challenge's ``extra-params``, default sha384."""
    if not isinstance(extra_params, dict) or "selected-hash-algorithm" not in extra_params:
        return DEFAULT_HASH
    name = extra_params["selected-hash-algorithm"]
    if not isinstance(name, str) or name.lower() not in HASH_ALGORITHMS:
        raise KbsError(f"KBS selected an unsupported hash algorithm {name!r}")
    return name.lower()
