"""PROTOCOLS.md §4.4 vectors: Trustee's JCS test vector and the worked sample example."""

from __future__ import annotations

import base64
import hashlib

import rfc8785

from guest.attesters.sample import SampleAttester
from guest.kbs.evidence import runtime_data_digest, selected_hash
from tests.guest import trustee_jwe

P256_GENERATOR = {
    "kty": "EC",
    "crv": "P-256",
    "alg": "ECDH-ES+A256KW",
    "x": "axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpY",
    "y": "T-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU",
}


def test_trustee_jcs_vector() -> None:
    canonical = rfc8785.dumps({"b": 1, "a": "test", "c": {"d": "e"}})
    assert canonical == b'{"a":"test","b":1,"c":{"d":"e"}}'
    assert hashlib.sha384(canonical).hexdigest() == (
        "e71ce8e70d814ba6639c3612ebee0ff1f76f650f8dbb5e47157e0f3f525cd22c"
        "4597480a186427c813ca941da78870c3"
    )


async def test_worked_sample_example() -> None:
    nonce = base64.b64encode(bytes(32)).decode()
    digest = runtime_data_digest("sha384", nonce, P256_GENERATOR, "")
    assert digest.hex() == (
        "bc18735746472713c97d2b881e0a178e1b09bb652fd2a3d5e7945e756c7f1449"
        "6d7cc1a29bf74a6b3bfe248691e5f3b4"
    )
    evidence = await SampleAttester().evidence(digest)
    assert evidence == {
        "svn": "1",
        "report_data": "vBhzV0ZHJxPJfSuIHgoXjhsJu2Uv0qPV55RedWx/FEltfMGim/dKazv+JIaR5fO0",
    }


def test_selected_hash_defaults_to_sha384() -> None:
    assert selected_hash("") == "sha384"
    assert selected_hash({"selected-hash-algorithm": "SHA512"}) == "sha512"


def test_concat_kdf_matches_rfc7518_appendix_c() -> None:
    """RFC 7518 Appendix C (ECDH-ES, A128GCM) checks the test JWE builder's KDF."""
    z = bytes(
        [
            158,
            86,
            217,
            29,
            129,
            113,
            53,
            211,
            114,
            131,
            66,
            131,
            191,
            132,
            38,
            156,
            251,
            49,
            110,
            163,
            218,
            128,
            106,
            72,
            246,
            218,
            167,
            121,
            140,
            254,
            144,
            196,
        ]
    )
    info_alg = "A128GCM"
    # the appendix uses apu "Alice" and apv "Bob"; rebuild that variant inline
    import struct

    info = (
        struct.pack(">I", len(info_alg))
        + info_alg.encode()
        + struct.pack(">I", 5)
        + b"Alice"
        + struct.pack(">I", 3)
        + b"Bob"
        + struct.pack(">I", 128)
    )
    derived = hashlib.sha256(struct.pack(">I", 1) + z + info).digest()[:16]
    assert trustee_jwe.b64url(derived) == "VqqN6vgjbSBcIijNcacQGg"
    # and the builder's own (empty apu/apv) layout differs only in those fields
    assert (
        trustee_jwe.concat_kdf(z, "ECDH-ES+A256KW")
        == hashlib.sha256(
            struct.pack(">I", 1)
            + z
            + struct.pack(">I", 14)
            + b"ECDH-ES+A256KW"
            + bytes(8)
            + struct.pack(">I", 256)
        ).digest()
    )
