"""TLS profile shared by the adaptor (client) and the forwarder (server).

A profile is upstream's pair of knobs: ``TLS_MIN_VERSION`` (``VersionTLS12`` or
``VersionTLS13``) and ``TLS_CIPHER_SUITES`` (IANA names, as Go's ``crypto/tls`` spells
them). The adaptor validates it at startup and bakes it into ``apf.json``
(``tls-min-version``, ``tls-cipher-suites``); the forwarder reads it back from there.

The context helpers build :class:`ssl.SSLContext` objects from PEM strings. OpenSSL only loads
certificate chains from files, so the PEM goes through an anonymous in-memory file (memfd) or,
where that is missing, a private temp file (mode 0600) that is removed right after loading.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from runtime.errors import PeerPodsError

VERSION_TLS12 = "VersionTLS12"
VERSION_TLS13 = "VersionTLS13"

_VERSIONS = {
    VERSION_TLS12: ssl.TLSVersion.TLSv1_2,
    VERSION_TLS13: ssl.TLSVersion.TLSv1_3,
}
_REJECTED_VERSIONS = ("VersionTLS10", "VersionTLS11")

# IANA names that Go's crypto/tls accepts for TLS <= 1.2 -> OpenSSL names.
TLS12_CIPHER_SUITES: dict[str, str] = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256": "ECDHE-ECDSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256": "ECDHE-RSA-AES128-SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256": "AES128-SHA256",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA": "DES-CBC3-SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA": "ECDHE-RSA-DES-CBC3-SHA",
    "TLS_RSA_WITH_RC4_128_SHA": "RC4-SHA",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA": "ECDHE-RSA-RC4-SHA",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA": "ECDHE-ECDSA-RC4-SHA",
}

# TLS 1.3 suites: Go accepts the names but never lets them be configured (always on);
# OpenSSL's defaults for TLS 1.3 are the same three, so they are accepted and ignored.
TLS13_CIPHER_SUITES = (
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
)


class TLSProfileError(PeerPodsError, ValueError):
    """The TLS profile (minimum version, cipher suites) or TLS material is invalid."""


def read_pem(path: str, what: str) -> str:
    """The text of a PEM file named in the settings; a :class:`TLSProfileError` naming
    ``what`` and ``path`` when it cannot be read or is not text."""
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise TLSProfileError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise TLSProfileError(f"{what} {path} is not a PEM text file") from None


@dataclass(frozen=True, slots=True)
class TLSProfile:
    """A validated TLS profile. Empty fields mean "not configured" (TLS 1.2+, default ciphers)."""

    min_version: str = ""
    cipher_suites: tuple[str, ...] = ()

    @property
    def is_set(self) -> bool:
        return bool(self.min_version or self.cipher_suites)

    @property
    def openssl_ciphers(self) -> tuple[str, ...]:
        return tuple(
            TLS12_CIPHER_SUITES[name] for name in self.cipher_suites if name in TLS12_CIPHER_SUITES
        )

    def apply(self, context: ssl.SSLContext) -> None:
        """Set the minimum version and the TLS <= 1.2 ciphers on ``context``."""
        context.minimum_version = _VERSIONS.get(self.min_version, ssl.TLSVersion.TLSv1_2)
        if not self.cipher_suites:
            return
        ciphers = self.openssl_ciphers
        if not ciphers:
            # Only TLS 1.3 names: as in Go, no TLS 1.2 suite is left, so only 1.3 can work.
            context.minimum_version = ssl.TLSVersion.TLSv1_3
            return
        try:
            context.set_ciphers(":".join(ciphers))
        except ssl.SSLError as exc:
            raise TLSProfileError(
                f"cipher suites {', '.join(self.cipher_suites)} are not supported by "
                f"{ssl.OPENSSL_VERSION}: {exc}"
            ) from None


DEFAULT_PROFILE = TLSProfile()


def _split(cipher_suites: str | Sequence[str] | None) -> tuple[str, ...]:
    if cipher_suites is None:
        return ()
    items = cipher_suites.split(",") if isinstance(cipher_suites, str) else cipher_suites
    return tuple(item.strip() for item in items if item.strip())


def parse_profile(
    min_version: str | None = None, cipher_suites: str | Sequence[str] | None = None
) -> TLSProfile:
    """Validate upstream's TLS profile knobs; ``cipher_suites`` is a list or a comma string.

    Rejects TLS 1.0/1.1, unknown versions, unknown cipher names, cipher suites together with
    TLS 1.3, and suites this OpenSSL cannot offer.
    """
    version = (min_version or "").strip()
    suites = _split(cipher_suites)
    if version in _REJECTED_VERSIONS:
        raise TLSProfileError(
            f"invalid minVersion {version!r}: TLS 1.0 and 1.1 are not supported, "
            f"use {VERSION_TLS12} or {VERSION_TLS13}"
        )
    if version and version not in _VERSIONS:
        raise TLSProfileError(
            f"invalid minVersion {version!r}: unknown TLS version, "
            f"use {VERSION_TLS12} or {VERSION_TLS13}"
        )
    if version == VERSION_TLS13 and suites:
        raise TLSProfileError(
            "cipherSuites may not be specified when minVersion is VersionTLS13: "
            "TLS 1.3 cipher suites cannot be configured"
        )
    unknown = [s for s in suites if s not in TLS12_CIPHER_SUITES and s not in TLS13_CIPHER_SUITES]
    if unknown:
        valid = ", ".join(sorted(TLS12_CIPHER_SUITES) + list(TLS13_CIPHER_SUITES))
        raise TLSProfileError(
            f"invalid cipherSuites: cipher suite {unknown[0]} not supported or doesn't exist; "
            f"valid names: {valid}"
        )
    profile = TLSProfile(min_version=version, cipher_suites=suites)
    profile.apply(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))  # fails early if OpenSSL lacks them
    return profile


def _as_bytes(pem: str | bytes) -> bytes:
    return pem.encode() if isinstance(pem, str) else pem


def _as_text(pem: str | bytes) -> str:
    return pem.decode() if isinstance(pem, bytes) else pem


@contextlib.contextmanager
def _private_file(data: bytes) -> Iterator[str]:
    """A path holding ``data`` that nobody else can read, gone when the block ends."""
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is not None:
        try:
            fd = memfd_create("peerpods-pem", getattr(os, "MFD_CLOEXEC", 0))
        except OSError:
            fd = -1
        if fd >= 0:
            try:
                os.write(fd, data)
                yield f"/proc/self/fd/{fd}"
            finally:
                os.close(fd)
            return
    fd, path = tempfile.mkstemp(prefix="peerpods-", suffix=".pem")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def load_cert_chain_pem(
    context: ssl.SSLContext, cert_pem: str | bytes, key_pem: str | bytes
) -> None:
    """``context.load_cert_chain`` from PEM strings instead of files."""
    with (
        _private_file(_as_bytes(cert_pem)) as cert_path,
        _private_file(_as_bytes(key_pem)) as key_path,
    ):
        try:
            context.load_cert_chain(cert_path, key_path)
        except ssl.SSLError as exc:
            raise TLSProfileError(f"invalid TLS certificate or key: {exc}") from None


def _load_ca(context: ssl.SSLContext, ca_pem: str | bytes, what: str) -> None:
    try:
        context.load_verify_locations(cadata=_as_text(ca_pem))
    except (ssl.SSLError, ValueError) as exc:
        raise TLSProfileError(f"invalid {what}: {exc}") from None


def server_context(
    cert_pem: str | bytes,
    key_pem: str | bytes,
    client_ca_pem: str | bytes | None,
    profile: TLSProfile = DEFAULT_PROFILE,
) -> ssl.SSLContext:
    """Server side (the forwarder): with ``client_ca_pem`` clients must present a cert it
    signed (mutual TLS); without it no client certificate is asked for."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    profile.apply(context)
    # No client resumes sessions (each dial is a full handshake): TLS 1.3 session tickets
    # would only cost two more records on every new connection.
    context.num_tickets = 0
    load_cert_chain_pem(context, cert_pem, key_pem)
    if client_ca_pem:
        _load_ca(context, client_ca_pem, "client CA")
        context.verify_mode = ssl.CERT_REQUIRED
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


def client_context(
    cert_pem: str | bytes | None,
    key_pem: str | bytes | None,
    ca_pem: str | bytes | None,
    profile: TLSProfile = DEFAULT_PROFILE,
    skip_verify: bool = False,
) -> ssl.SSLContext:
    """Client side (the adaptor's agent proxy).

    The server certificate is checked against ``ca_pem`` (the system roots when ``None``),
    with the host name the caller passes as ``server_hostname``. ``skip_verify`` turns all
    checks off and cannot be combined with a CA.
    """
    if skip_verify and ca_pem:
        raise TLSProfileError("TLS skip-verify cannot be combined with a CA certificate")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    profile.apply(context)
    if skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif ca_pem:
        _load_ca(context, ca_pem, "CA certificate")
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if cert_pem and key_pem:
        load_cert_chain_pem(context, cert_pem, key_pem)
    elif cert_pem or key_pem:
        raise TLSProfileError("a client certificate needs both the certificate and its key")
    return context
