"""Key broker clients of the CDH.

``CcKbc`` does not attest itself: it asks the attestation-agent for ``GetToken("kbs")``
over ttrpc (50 s timeout), which returns ``{"token", "tee_keypair"}``, and fetches with
``Authorization: Bearer``; on 401 it asks for a new token (3 attempts in all).
``OfflineFsKbc`` serves resources from upstream's JSON files of base64 values.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import aiohttp

from guest.errors import GuestError, KbsError, ResourceNotFound, ResponseError
from guest.kbs.client import fetch_resource
from guest.kbs.http import new_session
from guest.kbs.keys import TeeKeyPair
from guest.kbs.resource_uri import ResourceUri
from guest.kbs.token import Token
from protocols.kata import attestation_agent_pb2 as aa_pb
from protocols.ttrpc import Client, ConnectionClosed, TTRPCError

log = logging.getLogger(__name__)

AA_SERVICE = "attestation_agent.AttestationAgentService"
TOKEN_RENEW_METADATA = "token-renew"  # see guest.aa.service
TTRPC_TIMEOUT = 50.0
OFFLINE_FILES = (
    Path("/etc/aa-offline_fs_kbc-keys.json"),
    Path("/etc/aa-offline_fs_kbc-resources.json"),
)
OFFLINE_EXTRA_ENV = "OFFLINE_FS_KBC_EXTRA_FILE_PATH"


class Kbc(Protocol):
    async def get_resource(self, uri: ResourceUri) -> bytes: ...

    async def aclose(self) -> None: ...


class AaTokenSource:
    """Tokens from the attestation-agent's ttrpc socket (one connection, re-dialled)."""

    def __init__(self, aa_socket_path: Path) -> None:
        self.path = aa_socket_path
        self._client: Client | None = None
        # the AA hands out the same key pair while its token is cached: parse the PEM once
        self._key: tuple[str, TeeKeyPair] | None = None

    async def __call__(self, renew: bool) -> tuple[Token, TeeKeyPair]:
        request = aa_pb.GetTokenRequest(TokenType="kbs")
        try:
            client = await self._connect()
            reply = await client.call(
                AA_SERVICE,
                "GetToken",
                request,
                aa_pb.GetTokenResponse,
                timeout=TTRPC_TIMEOUT,
                metadata=[(TOKEN_RENEW_METADATA, "1")] if renew else (),
            )
        except (OSError, ConnectionClosed, TTRPCError, TimeoutError) as exc:
            await self.aclose()
            raise KbsError(f"Attestation Agent client error: get token failed: {exc}") from exc
        try:
            message = json.loads(reply.Token)
            token, pem = Token.parse(message["token"]), message["tee_keypair"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ResponseError("AA GetToken reply is not {token, tee_keypair}") from exc
        if not isinstance(pem, str):
            raise ResponseError("AA GetToken reply: tee_keypair is not a PEM string")
        if self._key is None or self._key[0] != pem:
            self._key = (pem, TeeKeyPair.from_pem(pem))
        return token, self._key[1]

    async def _connect(self) -> Client:
        if self._client is None or self._client.closed:
            self._client = await Client.connect_unix(str(self.path))
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


class CcKbc:
    def __init__(self, url: str, cert: str | None, tokens: AaTokenSource) -> None:
        self.url = url
        self.tokens = tokens
        self.session: aiohttp.ClientSession = new_session(cert)

    async def get_resource(self, uri: ResourceUri) -> bytes:
        try:
            return await fetch_resource(self.session, self.url, uri, self.tokens)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KbsError(f"KBS request for {uri} failed: {exc}") from exc

    async def aclose(self) -> None:
        await self.tokens.aclose()
        await self.session.close()


class OfflineFsKbc:
    def __init__(self, resources: dict[str, bytes]) -> None:
        self.resources = resources

    @classmethod
    def load(cls, paths: Iterable[Path]) -> OfflineFsKbc:
        resources: dict[str, bytes] = {}
        for path in paths:
            try:
                raw = path.read_bytes()
            except OSError as exc:
                log.warning("Failed to read file %s to init offline-fs-kbc: %s", path, exc)
                continue
            try:
                table = json.loads(raw)
                resources.update({k: base64.b64decode(v, validate=True) for k, v in table.items()})
            except (ValueError, AttributeError, TypeError, binascii.Error) as exc:
                raise GuestError(f"offline-fs-kbc: illegal resource file {path}") from exc
        return cls(resources)

    async def get_resource(self, uri: ResourceUri) -> bytes:
        path = uri.resource_path()
        try:
            return self.resources[path]
        except KeyError:
            raise ResourceNotFound(f"offline-fs-kbc: resource not found {path}") from None

    async def aclose(self) -> None:
        return None
