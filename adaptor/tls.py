"""mTLS material for the agent proxy: an in-process CA, per-VM server certificates, the
adaptor's own client certificate, and the client SSL context used to dial each forwarder.

Modes (as upstream):
- automatic (no ``CACERT_FILE``): an in-memory CA (org ``agent-protocol-forwarder``) issues a
  server certificate per pod VM (CN and DNS SAN = instance name), delivered in ``apf.json``
  with ``tls-client-ca`` = the adaptor's client certificate; the client checks the VM against
  the CA with server name = instance name.
- manual (``CACERT_FILE``): the VM image carries its own server certificate for
  ``podvm-server``; the client checks it against the given CA with that fixed name.
- ``-disable-tls``: plain TCP.
"""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from adaptor.tlsstate import StoredPair, load_or_create
from runtime.tlsprofile import (
    DEFAULT_PROFILE,
    TLSProfile,
    TLSProfileError,
    client_context,
    read_pem,
)

CA_ORG = "agent-protocol-forwarder"
CLIENT_ORG = "cloud-api-adaptor"
MANUAL_SERVER_NAME = "podvm-server"
_BACKDATE = datetime.timedelta(minutes=5)
_CLIENT_VALIDITY = datetime.timedelta(days=730)
_CA_VALIDITY = datetime.timedelta(days=3650)
_SERVER_VALIDITY = datetime.timedelta(days=365)


@dataclass(frozen=True, slots=True)
class KeyPair:
    cert_pem: str
    key_pem: str


@dataclass(frozen=True, slots=True)
class ServerMaterial:
    """What a pod VM's forwarder receives in ``apf.json`` (all optional)."""

    server_cert: str = ""
    server_key: str = ""
    client_ca: str = ""


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def new_client_certificate(org: str = CLIENT_ORG) -> KeyPair:
    """A self-signed client certificate (ECDSA P-256, clientAuth, 2 years, backdated 5 min)."""
    key = _new_key()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(NameOID.COMMON_NAME, org),
        ]
    )
    cert = (
        _leaf(name, name, key, _CLIENT_VALIDITY, ExtendedKeyUsageOID.CLIENT_AUTH)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(_cert_pem(cert), _key_pem(key))


def _leaf(
    subject: x509.Name,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    validity: datetime.timedelta,
    usage: x509.ObjectIdentifier,
) -> x509.CertificateBuilder:
    """An end-entity certificate for signatures (ECDSA), for one extended key usage."""
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )


class CertificateAuthority:
    """A CA that issues one server certificate per pod VM (new, or loaded with
    :meth:`from_pem` so that a restarted adaptor keeps trusting the VMs it set up)."""

    def __init__(self, org: str = CA_ORG) -> None:
        self._key: ec.EllipticCurvePrivateKey = _new_key()
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                x509.NameAttribute(NameOID.COMMON_NAME, f"{org} CA"),
            ]
        )
        now = _now()
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + _CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        self.root_pem = _cert_pem(self._cert)

    @classmethod
    def from_pem(cls, cert_pem: str, key_pem: str) -> CertificateAuthority:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("the CA key is not an EC key")
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
        if cert.public_key() != key.public_key():
            raise ValueError("the CA certificate does not match its key")
        ca = cls.__new__(cls)
        ca._key, ca._cert, ca.root_pem = key, cert, _cert_pem(cert)
        return ca

    @property
    def key_pair(self) -> KeyPair:
        return KeyPair(self.root_pem, _key_pem(self._key))

    def issue_server(self, name: str) -> KeyPair:
        """A server certificate with CN and DNS SAN = ``name``."""
        key = _new_key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            _leaf(subject, self._cert.subject, key, _SERVER_VALIDITY,
                  ExtendedKeyUsageOID.SERVER_AUTH)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        return KeyPair(_cert_pem(cert), _key_pem(key))


def _stored(pair: KeyPair) -> StoredPair:
    return StoredPair(pair.cert_pem, pair.key_pem)


def _check_ca(pair: StoredPair) -> None:
    CertificateAuthority.from_pem(pair.cert_pem, pair.key_pem)


def _check_pair(pair: StoredPair) -> None:
    key = serialization.load_pem_private_key(pair.key_pem.encode(), password=None)
    cert = x509.load_pem_x509_certificate(pair.cert_pem.encode())
    if cert.public_key() != key.public_key():
        raise ValueError("the certificate does not match its key")


class AgentTLS:
    """The adaptor's TLS setup for dialling forwarders, built once at startup."""

    def __init__(
        self,
        *,
        disabled: bool = False,
        ca_cert_file: str = "",
        cert_file: str = "",
        cert_key: str = "",
        skip_verify: bool = False,
        profile: TLSProfile = DEFAULT_PROFILE,
        state_dir: str = "",
    ) -> None:
        """``state_dir`` (when set) keeps what is generated here across restarts."""
        self.disabled = disabled
        self.profile = profile
        self.skip_verify = skip_verify
        self._ca: CertificateAuthority | None = None
        self._client: KeyPair | None = None
        self._ca_pem = ""
        if disabled:
            return
        if skip_verify and ca_cert_file:
            raise TLSProfileError("TLS_SKIP_VERIFY cannot be combined with CACERT_FILE")
        if bool(cert_file) != bool(cert_key):
            raise TLSProfileError("CERT_FILE and CERT_KEY must be given together")
        if cert_file:
            self._client = KeyPair(
                read_pem(cert_file, "client certificate"), read_pem(cert_key, "client key")
            )
        elif state_dir:
            stored = load_or_create(
                state_dir, "client", lambda: _stored(new_client_certificate()), _check_pair
            )
            self._client = KeyPair(stored.cert_pem, stored.key_pem)
        else:
            self._client = new_client_certificate()
        if ca_cert_file:
            self._ca_pem = read_pem(ca_cert_file, "CA certificate")
        elif state_dir:
            stored = load_or_create(
                state_dir, "ca", lambda: _stored(CertificateAuthority().key_pair), _check_ca
            )
            self._ca = CertificateAuthority.from_pem(stored.cert_pem, stored.key_pem)
            self._ca_pem = self._ca.root_pem
        else:
            self._ca = CertificateAuthority()
            self._ca_pem = self._ca.root_pem
        # Build one context now so that broken files or profiles fail at startup.
        self._context = client_context(
            self._client.cert_pem,
            self._client.key_pem,
            None if skip_verify else self._ca_pem,
            profile,
            skip_verify,
        )

    @property
    def automatic(self) -> bool:
        """True when the in-process CA issues the VMs' server certificates."""
        return self._ca is not None

    def server_material(self, instance_name: str) -> ServerMaterial:
        """TLS fields for one VM's ``apf.json``."""
        if self.disabled or self._ca is None or self._client is None:
            return ServerMaterial()
        pair = self._ca.issue_server(instance_name)
        return ServerMaterial(pair.cert_pem, pair.key_pem, self._client.cert_pem)

    def server_name(self, instance_name: str) -> str | None:
        """The name the VM's certificate must carry (``None`` without TLS)."""
        if self.disabled:
            return None
        return instance_name if self._ca is not None else MANUAL_SERVER_NAME

    def client_context(self) -> ssl.SSLContext | None:
        return None if self.disabled else self._context
