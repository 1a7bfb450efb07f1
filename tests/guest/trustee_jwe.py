"""The resource JWE exactly as Trustee's ``kbs/src/jwe`` builds it (PROTOCOLS.md §4.7).

Built by hand with ``cryptography`` on purpose: the client decrypts with jwcrypto, so the
two sides share no JOSE code. Header key order ``alg``, ``enc``, ``epk`` (``crv``, ``kty``,
``x``, ``y``), compact; AAD = the ASCII ``protected`` string; no ``aad`` member.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_wrap

CURVES: dict[str, tuple[ec.EllipticCurve, int]] = {
    "P-256": (ec.SECP256R1(), 32),
    "P-521": (ec.SECP521R1(), 66),
}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def concat_kdf(z: bytes, alg: str, bits: int = 256) -> bytes:
    """RFC 7518 §4.6.2 Concat KDF, SHA-256, apu/apv empty; one round for 256 bits."""
    info = (
        struct.pack(">I", len(alg))
        + alg.encode()
        + struct.pack(">I", 0)
        + struct.pack(">I", 0)
        + struct.pack(">I", bits)
    )
    return hashlib.sha256(struct.pack(">I", 1) + z + info).digest()[: bits // 8]


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def build(tee_pubkey: dict[str, Any], plaintext: bytes) -> dict[str, str]:
    cek = os.urandom(32)
    if tee_pubkey["kty"] == "EC":
        curve, size = CURVES[tee_pubkey["crv"]]
        x = int.from_bytes(unb64url(tee_pubkey["x"]), "big")
        y = int.from_bytes(unb64url(tee_pubkey["y"]), "big")
        peer = ec.EllipticCurvePublicNumbers(x, y, curve).public_key()
        ephemeral = ec.generate_private_key(curve)
        z = ephemeral.exchange(ec.ECDH(), peer)
        alg = "ECDH-ES+A256KW"
        encrypted_key = aes_key_wrap(concat_kdf(z, alg), cek)
        numbers = ephemeral.public_key().public_numbers()
        epk = {
            "crv": tee_pubkey["crv"],
            "kty": "EC",
            "x": b64url(numbers.x.to_bytes(size, "big")),
            "y": b64url(numbers.y.to_bytes(size, "big")),
        }
        header: dict[str, Any] = {"alg": alg, "enc": "A256GCM", "epk": epk}
    else:
        n = int.from_bytes(unb64url(tee_pubkey["n"]), "big")
        e = int.from_bytes(unb64url(tee_pubkey["e"]), "big")
        public = rsa.RSAPublicNumbers(e, n).public_key()
        oaep = padding.OAEP(
            mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None
        )
        encrypted_key = public.encrypt(cek, oaep)
        header = {"alg": "RSA-OAEP-256", "enc": "A256GCM"}
    protected = b64url(_compact(header).encode())
    iv = os.urandom(12)
    sealed = AESGCM(cek).encrypt(iv, plaintext, protected.encode())
    return {
        "protected": protected,
        "encrypted_key": b64url(encrypted_key),
        "iv": b64url(iv),
        "ciphertext": b64url(sealed[:-16]),
        "tag": b64url(sealed[-16:]),
    }
