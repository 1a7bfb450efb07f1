"""Initdata codec: parse, gzip+base64, digests computed independently with hashlib."""

from __future__ import annotations

import base64
import gzip
import hashlib

import pytest

from protocols import initdata
from protocols.initdata import InitDataError

# Without a final newline; WITH_NL is the same document as `cat file | gzip` would see it.
TOML = b"""version = "0.1.0"
algorithm = "sha384"

[data]
"aa.toml" = '''
[token_configs]
[token_configs.coco_as]
url = 'http://127.0.0.1:8080'

[token_configs.kbs]
url = 'http://127.0.0.1:8080'
'''

"cdh.toml" = '''
socket = 'unix:///run/confidential-containers/cdh.sock'
credentials = []

[kbc]
name = 'cc_kbc'
url = 'http://127.0.0.1:8080'
'''

"policy.rego" = '''
package agent_policy

default AllowRequestsFailingPolicy := true
'''"""
WITH_NL = TOML + b"\n"


def test_parse_fields() -> None:
    init = initdata.parse(TOML)
    assert init.version == "0.1.0"
    assert init.algorithm == "sha384"
    assert sorted(init.data) == ["aa.toml", "cdh.toml", "policy.rego"]
    assert init.data["aa.toml"].startswith("[token_configs]\n[token_configs.coco_as]\n")
    assert init.data["policy.rego"] == (
        "package agent_policy\n\ndefault AllowRequestsFailingPolicy := true\n"
    )
    assert init.raw == TOML


@pytest.mark.parametrize("algorithm", ["sha256", "sha384", "sha512"])
def test_digest_is_hash_of_exact_bytes(algorithm: str) -> None:
    raw = TOML.replace(b'"sha384"', f'"{algorithm}"'.encode())
    expected = {
        "sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512
    }[algorithm](raw).hexdigest()
    assert initdata.digest(initdata.parse(raw)) == expected


def test_trailing_newline_changes_the_digest() -> None:
    without = initdata.digest(initdata.parse(TOML))
    with_nl = initdata.digest(initdata.parse(WITH_NL))
    assert without == hashlib.sha384(TOML).hexdigest()
    assert with_nl == hashlib.sha384(WITH_NL).hexdigest()
    assert without != with_nl
    # Same document either way.
    assert initdata.parse(TOML).data == initdata.parse(WITH_NL).data


def test_dummy_is_upstreams() -> None:
    literal = (
        b'algorithm = "sha256"\n'
        b'version = "0.1.0"\n'
        b"\n"
        b"[data]\n"
        b"\"aa.toml\" = '''\n"
        b"'''"
    )
    assert literal == initdata.DUMMY_TOML
    init = initdata.parse(initdata.DUMMY_TOML)
    assert (init.algorithm, init.version, dict(init.data)) == ("sha256", "0.1.0", {"aa.toml": ""})
    assert initdata.digest(init) == hashlib.sha256(literal).hexdigest()


def test_encode_is_gzip_base64_one_line() -> None:
    encoded = initdata.encode(WITH_NL)
    assert "\n" not in encoded
    assert gzip.decompress(base64.b64decode(encoded, validate=True)) == WITH_NL
    assert initdata.encode(WITH_NL.decode()) == encoded


def test_decode_independent_encoding() -> None:
    # As `gzip | base64 -w0` would make it, and wrapped at 76 columns like `base64`.
    blob = base64.b64encode(gzip.compress(WITH_NL, compresslevel=6)).decode()
    assert initdata.decode(blob) == WITH_NL
    wrapped = "\n".join(blob[i : i + 76] for i in range(0, len(blob), 76)) + "\n"
    assert initdata.decode(wrapped) == WITH_NL
    assert initdata.decode(wrapped.encode()) == WITH_NL
    assert initdata.decode(initdata.encode(TOML) + "\r\n") == TOML


def test_decode_multi_member_gzip() -> None:
    blob = gzip.compress(TOML[:100]) + gzip.compress(TOML[100:])
    assert initdata.decode(base64.b64encode(blob)) == TOML


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "initdata is empty"),
        ("\n", "initdata is empty"),
        ("not base64 at all!", "not valid base64"),
        ("YWJj ZGVm", "not valid base64"),
        (base64.b64encode(b"plain text, not gzip").decode(), "not valid gzip"),
        (base64.b64encode(gzip.compress(TOML)[:40]).decode(), "gzip stream is truncated"),
        ("é", "non-ASCII"),
    ],
)
def test_decode_errors(text: str, message: str) -> None:
    with pytest.raises(InitDataError, match=message):
        initdata.decode(text.encode("utf-8") if text == "é" else text)


def test_decode_refuses_gzip_bomb() -> None:
    bomb = base64.b64encode(gzip.compress(bytes(initdata.MAX_TOML_BYTES + 1)))
    with pytest.raises(InitDataError, match="decompresses to more than"):
        initdata.decode(bomb)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (b'algorithm = "sha1"\n', "'sha1' is not supported"),
        (b'algorithm = "SHA256"\n', "'SHA256' is not supported"),
        (b'algorithm = "sha-256"\n', "'sha-256' is not supported"),
        (b'version = "0.1.0"\n', "missing or not a string"),
        (b"algorithm = 256\n", "missing or not a string"),
        (b'algorithm = "sha256"\nversion = 1\n', "version must be a string"),
        (b'algorithm = "sha256"\ndata = "x"\n', "data must be a table"),
        (b'algorithm = "sha256"\n[data]\n"aa.toml" = 1\n', "data.'aa.toml' must be a string"),
        (b'algorithm = "sha256"\n[data.nested]\nx = "y"\n', "data.'nested' must be a string"),
        (b'algorithm = "sha256"\n[data\n', "not valid TOML"),
        (b'algorithm = "sha256"\n# \xff\n', "not UTF-8"),
    ],
)
def test_parse_errors(toml: bytes, message: str) -> None:
    with pytest.raises(InitDataError, match=message):
        initdata.parse(toml)


def test_unknown_top_level_keys_are_ignored_like_upstream() -> None:
    init = initdata.parse(b'algorithm = "sha512"\nextra = 1\n')
    assert (init.version, dict(init.data)) == ("", {})


def test_pcr8_value() -> None:
    digest = hashlib.sha384(TOML).hexdigest()
    expected = hashlib.sha256(bytes(32) + hashlib.sha384(TOML).digest()[:32]).digest()
    assert initdata.pcr8_value(digest) == expected
    sha256_digest = hashlib.sha256(TOML).hexdigest()
    assert initdata.pcr8_value(sha256_digest) == hashlib.sha256(
        bytes(32) + hashlib.sha256(TOML).digest()
    ).digest()
    with pytest.raises(InitDataError, match="at least 32"):
        initdata.pcr8_value("00" * 31)
    with pytest.raises(InitDataError, match="not hex"):
        initdata.pcr8_value("zz" * 32)
