"""Test PKI (as the adaptor issues it) and a fake kata-agent on a unix socket."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from protocols.kata import agent_pb2, health_pb2
from protocols.ttrpc import CallContext, Code, Server, TTRPCError

SERVER_NAME = "podvm-test-0123abcd"


@dataclass(frozen=True)
class KeyPair:
    cert_pem: str
    key_pem: str


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _name(common_name: str, org: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
             ) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
    )


def make_ca(org: str = "agent-protocol-forwarder") -> tuple[KeyPair, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(org, org)
    cert = (
        _builder(name, name, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key)), key


def issue_server_cert(ca: KeyPair, ca_key: ec.EllipticCurvePrivateKey,
                      name: str = SERVER_NAME, *, client: bool = False) -> KeyPair:
    key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.encode())
    cert = (
        _builder(_name(name, "agent-protocol-forwarder"), ca_cert.subject, key.public_key())
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.ExtendedKeyUsage([
            ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]),
            critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key))


def self_signed_client_cert(org: str = "cloud-api-adaptor") -> KeyPair:
    """The adaptor's client certificate: self-signed, clientAuth (``tls-client-ca``)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(org, org)
    cert = (
        _builder(name, name, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key))


@dataclass(frozen=True)
class Pki:
    ca: KeyPair  # the adaptor's CA service: signs the VM's server certificate
    server: KeyPair  # the pod VM's server certificate (SAN = instance name)
    client: KeyPair  # the adaptor's client certificate (also the forwarder's client CA)
    other_client: KeyPair  # a certificate the forwarder does not trust

    def apf_json(self, **extra: object) -> str:
        body: dict[str, object] = {
            "pod-network": None,
            "pod-namespace": "default",
            "pod-name": "nginx",
            "tls-server-key": self.server.key_pem,
            "tls-server-cert": self.server.cert_pem,
            "tls-client-ca": self.client.cert_pem,
        }
        body.update(extra)
        return json.dumps(body)


def make_pki() -> Pki:
    ca, ca_key = make_ca()
    return Pki(ca=ca, server=issue_server_cert(ca, ca_key), client=self_signed_client_cert(),
               other_client=self_signed_client_cert("intruder"))


async def wait_until(predicate: Callable[[], bool], limit: float = 10.0) -> None:
    """Poll ``predicate`` every 10 ms until it holds (fails the test after ``limit`` s)."""
    for _ in range(int(limit / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"condition not met within {limit}s")


@dataclass
class Seen:
    service: str
    method: str
    payload: bytes
    metadata: tuple[tuple[str, str], ...]
    timeout_nano: int


@dataclass
class FakeAgent:
    """kata-agent stand-in: answers Health, records every call, blocks WaitProcess.

    ``SignalProcess`` fails with NOT_FOUND (with a status detail), ``WaitProcess`` returns
    exit status 7 once :attr:`release` is set.
    """

    path: str
    seen: list[Seen] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    server: Server | None = None

    ERROR_DETAIL = b"\x0a\x0ftype.example/x\x12\x02hi"

    async def start(self) -> FakeAgent:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        server = Server()
        server.register_raw("grpc.AgentService", self._handle)
        server.register_raw("grpc.Health", self._handle)
        await server.start_unix(self.path)
        self.server = server
        return self

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.shutdown(grace=0)
            self.server = None

    def calls(self, method: str) -> list[Seen]:
        return [s for s in self.seen if s.method == method]

    async def _handle(self, ctx: CallContext, payload: bytes) -> bytes:
        self.seen.append(Seen(ctx.service, ctx.method, payload, ctx.metadata, ctx.timeout_nano))
        if ctx.service == "grpc.Health" and ctx.method == "Check":
            return health_pb2.HealthCheckResponse(
                status=health_pb2.HealthCheckResponse.SERVING).SerializeToString()
        if ctx.service == "grpc.Health" and ctx.method == "Version":
            return health_pb2.VersionCheckResponse(agent_version="fake-3.0").SerializeToString()
        if ctx.method == "WaitProcess":
            await self.release.wait()
            return agent_pb2.WaitProcessResponse(status=7).SerializeToString()
        if ctx.method == "SignalProcess":
            raise TTRPCError(Code.NOT_FOUND, "process fake not found", (self.ERROR_DETAIL,))
        return b""
