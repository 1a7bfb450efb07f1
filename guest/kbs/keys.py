"""The TEE key pair: its kbs-types public key, its PEM form, and JWE decryption.

aa.toml ``tee_key_algorithm``: ``ECDH-ES+A256KW-P256`` (default), ``ECDH-ES+A256KW-P521``,
``RSA-OAEP-256``. PEM as upstream's ``to_pem``: PKCS#8 for EC, PKCS#1 for RSA.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwcrypto import jwe, jwk
from jwcrypto.common import JWException

from guest.errors import GuestConfigError, ResponseError

P256 = "ECDH-ES+A256KW-P256"
P521 = "ECDH-ES+A256KW-P521"
RSA_OAEP_256 = "RSA-OAEP-256"
DEFAULT_ALGORITHM = P256
ECDH_ES_A256KW = "ECDH-ES+A256KW"
RSA_BITS = 2048

# JWE algorithms this client accepts from a KBS (RFC 7518 names)
ALLOWED_JWE_ALGS = [ECDH_ES_A256KW, RSA_OAEP_256, "A256GCM"]
JWE_FIELDS = ("protected", "encrypted_key", "iv", "ciphertext", "tag")


@dataclass(frozen=True, slots=True, repr=False)
class TeeKeyPair:
    algorithm: str
    key: jwk.JWK

    def __repr__(self) -> str:  # never print the private key
        return f"TeeKeyPair({self.algorithm})"

    @classmethod
    def generate(cls, algorithm: str = DEFAULT_ALGORITHM) -> TeeKeyPair:
        if algorithm == P256:
            key = jwk.JWK.generate(kty="EC", crv="P-256")
        elif algorithm == P521:
            key = jwk.JWK.generate(kty="EC", crv="P-521")
        elif algorithm == RSA_OAEP_256:
            key = jwk.JWK.generate(kty="RSA", size=RSA_BITS)
        else:
            raise GuestConfigError(f"unknown tee_key_algorithm {algorithm!r}")
        return cls(algorithm, key)

    @classmethod
    def from_pem(cls, pem: str | bytes) -> TeeKeyPair:
        data = pem.encode() if isinstance(pem, str) else pem
        try:
            key = jwk.JWK.from_pem(data)
        except (ValueError, TypeError) as exc:
            raise ResponseError(f"tee_keypair is not a PEM private key: {exc}") from exc
        if key.get("kty") == "RSA":
            return cls(RSA_OAEP_256, key)
        return cls(P521 if key.get("crv") == "P-521" else P256, key)

    def public_key(self) -> dict[str, str]:
        """kbs-types ``TeePubKey`` (tagged by ``kty``)."""
        public = self.key.export_public(as_dict=True)
        if public["kty"] == "RSA":
            return {"kty": "RSA", "alg": RSA_OAEP_256, "n": public["n"], "e": public["e"]}
        return {
            "kty": "EC",
            "crv": public["crv"],
            "alg": ECDH_ES_A256KW,
            "x": public["x"],
            "y": public["y"],
        }

    def to_pem(self) -> str:
        private = self.key.get_op_key("unwrapKey")
        fmt = (
            serialization.PrivateFormat.TraditionalOpenSSL
            if isinstance(private, rsa.RSAPrivateKey)
            else serialization.PrivateFormat.PKCS8
        )
        assert isinstance(private, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
        return private.private_bytes(
            serialization.Encoding.PEM, fmt, serialization.NoEncryption()
        ).decode()

    def decrypt(self, response: Any) -> bytes:
        """Decrypt a KBS resource reply (flattened JWE JSON, kbs-types ``Response``)."""
        if not isinstance(response, dict) or any(
            not isinstance(response.get(name), str) for name in JWE_FIELDS
        ):
            raise ResponseError("KBS response is not a flattened JWE")
        token = jwe.JWE()
        try:
            token.deserialize(json.dumps(response), key=None)
            token.allowed_algs = ALLOWED_JWE_ALGS
            token.decrypt(self.key)
        except (JWException, ValueError, KeyError, TypeError) as exc:
            raise ResponseError(f"JWE decryption failed: {type(exc).__name__}") from exc
        header = token.jose_header
        if header.get("enc") != "A256GCM":
            raise ResponseError(f"unexpected JWE enc {header.get('enc')!r}")
        return bytes(token.payload)
