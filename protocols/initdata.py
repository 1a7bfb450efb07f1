"""Initdata: the TOML document that configures a pod VM's guest components.

::

    version = "0.1.0"
    algorithm = "sha384"        # sha256 | sha384 | sha512
    [data]
    "aa.toml" = '''...'''
    "cdh.toml" = '''...'''
    "policy.rego" = '''...'''

On the wire (pod annotation, user-data ``/run/peerpod/initdata``, the ``INITDATA`` setting)
it travels as ``base64(gzip(toml))``, standard alphabet with padding. Its digest is the
chosen hash over the exact TOML bytes, with no canonicalisation: a trailing newline changes
the digest.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import io
import tomllib
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from runtime.errors import FormatError

#: The pod annotation that carries initdata (``base64(gzip(toml))`` from the user; the Kata
#: shim hands the plain TOML to the adaptor under the same key).
ANNOTATION = "io.katacontainers.config.hypervisor.cc_init_data"

ALGORITHMS: Mapping[str, Callable[[bytes], Any]] = MappingProxyType(
    {"sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}
)

#: What a pod VM measures when no initdata was delivered (upstream's dummy, byte for byte:
#: an empty ``aa.toml`` and no final newline).
DUMMY_TOML = b"""algorithm = "sha256"
version = "0.1.0"

[data]
"aa.toml" = '''
'''"""

#: Largest decompressed initdata accepted (guards against gzip bombs).
MAX_TOML_BYTES = 4 * 1024 * 1024


class InitDataError(FormatError):
    """Initdata that cannot be decoded or parsed."""


@dataclass(frozen=True, slots=True)
class InitData:
    version: str
    algorithm: str
    data: Mapping[str, str]
    raw: bytes


def parse(toml_bytes: bytes) -> InitData:
    """Parse initdata TOML. ``raw`` keeps the exact bytes, which the digest is taken over.

    Like upstream, keys besides ``version``, ``algorithm`` and ``data`` are ignored, and a
    missing ``version`` or ``data`` reads as empty.
    """
    if len(toml_bytes) > MAX_TOML_BYTES:
        raise InitDataError(f"initdata is {len(toml_bytes)} bytes, over {MAX_TOML_BYTES}")
    try:
        text = toml_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InitDataError(f"initdata is not UTF-8 (byte offset {exc.start})") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InitDataError(f"initdata is not valid TOML: {exc}") from None
    algorithm = doc.get("algorithm")
    if not isinstance(algorithm, str) or algorithm not in ALGORITHMS:
        shown = repr(algorithm) if isinstance(algorithm, str) else "missing or not a string"
        raise InitDataError(
            f"initdata algorithm {shown} is not supported (use sha256, sha384 or sha512)"
        )
    version = doc.get("version", "")
    if not isinstance(version, str):
        raise InitDataError(f"initdata version must be a string, got {type(version).__name__}")
    table = doc.get("data", {})
    if not isinstance(table, dict):
        raise InitDataError(f"initdata data must be a table, got {type(table).__name__}")
    data: dict[str, str] = {}
    for key, value in table.items():
        if not isinstance(value, str):
            raise InitDataError(
                f"initdata data.{key!r} must be a string, got {type(value).__name__}"
            )
        data[key] = value
    return InitData(
        version=version,
        algorithm=algorithm,
        data=MappingProxyType(data),
        raw=bytes(toml_bytes),
    )


def digest(init: InitData) -> str:
    """Lowercase hex of ``H(raw)`` with H named by ``init.algorithm``."""
    return digest_of(init.algorithm, init.raw)


def digest_of(algorithm: str, toml_bytes: bytes) -> str:
    try:
        hasher = ALGORITHMS[algorithm]
    except KeyError:
        raise InitDataError(f"initdata algorithm {algorithm!r} is not supported") from None
    return str(hasher(toml_bytes).hexdigest())


def encode(toml_bytes: bytes | str) -> str:
    """``base64(gzip(toml))``, standard alphabet, one line (``gzip | base64 -w0``)."""
    if isinstance(toml_bytes, str):
        toml_bytes = toml_bytes.encode("utf-8")
    return base64.b64encode(gzip.compress(toml_bytes, mtime=0)).decode("ascii")


def decode(text: str | bytes) -> bytes:
    """Undo :func:`encode`: base64 (line breaks ignored, like Go's decoder) then gunzip."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise InitDataError("initdata is not valid base64 (non-ASCII bytes)") from None
    compact = text.replace("\r", "").replace("\n", "")
    if not compact:
        raise InitDataError("initdata is empty")
    try:
        blob = base64.b64decode(compact, validate=True)
    except binascii.Error as exc:
        raise InitDataError(f"initdata is not valid base64: {exc}") from None
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(blob), mode="rb") as stream:
            toml_bytes = stream.read(MAX_TOML_BYTES + 1)
    except EOFError:
        raise InitDataError("initdata gzip stream is truncated") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise InitDataError(f"initdata is not valid gzip: {exc}") from None
    if len(toml_bytes) > MAX_TOML_BYTES:
        raise InitDataError(f"initdata decompresses to more than {MAX_TOML_BYTES} bytes")
    return toml_bytes


def pcr8_value(digest_hex: str) -> bytes:
    """PCR 8 (SHA-256 bank) after one extend with the first 32 bytes of the digest.

    Pod VMs run ``tpm2_pcrextend 8:sha256=<first 64 hex chars of the digest>``, so a verifier
    expects ``sha256(32 zero bytes || digest[:32])``.
    """
    try:
        value = bytes.fromhex(digest_hex)
    except ValueError:
        raise InitDataError("digest is not hex") from None
    if len(value) < 32:
        raise InitDataError(f"digest has {len(value)} bytes, PCR 8 needs at least 32")
    return hashlib.sha256(bytes(32) + value[:32]).digest()
