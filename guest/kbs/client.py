"""KBS protocol 0.4.0 clients.

``RcarClient`` attests itself (attestation-agent, debugging CLI): /auth, /attest, keeps the
token and TEE key, and reuses them until shortly before the token's ``exp``.
``fetch_resource`` GETs ``/kbs/v0/<plugin>/<path>`` with ``Authorization: Bearer`` and
decrypts the JWE; on 401 it asks for fresh credentials, up to 3 attempts in all (both
upstream's RCAR client and CDH's token client behave so).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import aiohttp

from guest.errors import HandshakeError, KbsError, ResourceNotFound, Unauthorized
from guest.kbs.evidence import HASH_ALGORITHMS, runtime_data_digest, selected_hash
from guest.kbs.http import KBS_PREFIX, MAX_RESPONSE, error_info, parse_json, read_limited
from guest.kbs.keys import DEFAULT_ALGORITHM, TeeKeyPair
from guest.kbs.resource_uri import ResourceUri
from guest.kbs.token import Token

log = logging.getLogger(__name__)

PROTOCOL_VERSION = "0.4.0"
RCAR_ATTEMPTS = 5
RCAR_RETRY_DELAY = 1.0
GET_RESOURCE_ATTEMPTS = 3
# a cached token is renewed this many seconds before its exp
TOKEN_RENEW_MARGIN = 30.0


class EvidenceProvider(Protocol):
    tee: str

    async def primary_evidence(self, report_data: bytes) -> Any: ...

    async def additional_evidence(self, report_data: bytes) -> str: ...


Credentials = Callable[[bool], Awaitable[tuple[Token, TeeKeyPair]]]


class RcarClient:
    def __init__(
        self,
        url: str,
        session: aiohttp.ClientSession,
        evidence: EvidenceProvider,
        *,
        key_algorithm: str = DEFAULT_ALGORITHM,
        initdata_toml: str | None = None,
        attempts: int = RCAR_ATTEMPTS,
        retry_delay: float = RCAR_RETRY_DELAY,
    ) -> None:
        self.url = url.rstrip("/")
        self.session = session
        self.evidence = evidence
        self.key_algorithm = key_algorithm
        self.initdata_toml = initdata_toml
        self.attempts = attempts
        self.retry_delay = retry_delay
        self.tee_key = TeeKeyPair.generate(key_algorithm)
        self.token: Token | None = None
        self._lock = asyncio.Lock()

    async def get_token(self, renew: bool = False) -> tuple[Token, TeeKeyPair]:
        """The cached token and TEE key, after a handshake if none is valid (or ``renew``)."""
        async with self._lock:
            token = self.token
            if renew or token is None or not token.valid(margin=TOKEN_RENEW_MARGIN):
                await self._repeat_handshake()
            assert self.token is not None
            return self.token, self.tee_key

    async def get_resource(self, uri: ResourceUri) -> bytes:
        return await fetch_resource(self.session, self.url, uri, self.get_token)

    async def _repeat_handshake(self) -> None:
        for attempt in range(1, self.attempts + 1):
            try:
                await self.handshake()
                return
            except (KbsError, aiohttp.ClientError, TimeoutError) as exc:
                if attempt == self.attempts:
                    raise HandshakeError(
                        f"Unable to get token. RCAR handshake retried {self.attempts} times. "
                        f"Final attempt failed with: {exc}"
                    ) from exc
                log.warning("kbs=%s: RCAR handshake failed: %s, retry %d", self.url, exc, attempt)
                await asyncio.sleep(self.retry_delay)

    async def handshake(self) -> None:
        """One RCAR round: a fresh TEE key, /auth, evidence, /attest."""
        self.tee_key = TeeKeyPair.generate(self.key_algorithm)
        request = {
            "version": PROTOCOL_VERSION,
            "tee": self.evidence.tee,
            "extra-params": {"supported-hash-algorithms": list(HASH_ALGORITHMS)},
        }
        challenge = await self._post("auth", request, "KBS request")
        nonce = challenge.get("nonce") if isinstance(challenge, dict) else None
        if not isinstance(nonce, str):
            raise KbsError("KBS challenge has no nonce")
        algorithm = selected_hash(challenge.get("extra-params"))
        tee_pubkey = self.tee_key.public_key()
        additional = await self.evidence.additional_evidence(b"")
        report_data = runtime_data_digest(algorithm, nonce, tee_pubkey, additional)
        primary = await self.evidence.primary_evidence(report_data)
        init_data = (
            {"format": "toml", "body": self.initdata_toml}
            if self.initdata_toml is not None
            else None
        )
        attestation = {
            "init-data": init_data,
            "runtime-data": {"nonce": nonce, "tee-pubkey": tee_pubkey},
            "tee-evidence": {"primary_evidence": primary, "additional_evidence": additional},
        }
        reply = await self._post("attest", attestation, "KBS attest")
        if not isinstance(reply, dict) or not isinstance(reply.get("token"), str):
            raise KbsError("KBS attest reply has no token")
        self.token = Token.parse(reply["token"])
        log.info("kbs=%s tee=%s: attested", self.url, self.evidence.tee)

    async def _post(self, endpoint: str, body: Any, what: str) -> Any:
        url = f"{self.url}/{KBS_PREFIX}/{endpoint}"
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        async with self.session.post(url, data=data, headers=headers) as response:
            payload = await read_limited(response, MAX_RESPONSE)
            if response.status == 200:
                return parse_json(payload, f"{what} reply")
            if response.status == 401:
                raise KbsError(f"{what} unauthorized, {error_info(payload)}")
            raise KbsError(
                f"KBS Server Internal Failed, status {response.status}: {error_info(payload)}"
            )


def resource_url(base: str, uri: ResourceUri) -> str:
    url = f"{base.rstrip('/')}/{KBS_PREFIX}/{uri.plugin}/{uri.resource_path()}"
    return f"{url}?{uri.query}" if uri.query else url


async def fetch_resource(
    session: aiohttp.ClientSession,
    base_url: str,
    uri: ResourceUri,
    credentials: Credentials,
    *,
    limit: int = MAX_RESPONSE,
) -> bytes:
    """GET and decrypt one resource; on 401 renew the credentials (3 attempts in all)."""
    url = resource_url(base_url, uri)
    for attempt in range(1, GET_RESOURCE_ATTEMPTS + 1):
        token, tee_key = await credentials(attempt > 1)
        headers = {"Authorization": f"Bearer {token.content}"}
        async with session.get(url, headers=headers) as response:
            body = await read_limited(response, limit)
            status = response.status
        if status == 200:
            return tee_key.decrypt(parse_json(body, "KBS resource reply"))
        if status == 401:
            log.warning(
                "resource=%s: KBS refused the token (%s), attempt %d: attesting again",
                uri,
                error_info(body),
                attempt,
            )
            continue
        if status == 404:
            raise ResourceNotFound(f"KBS resource Not Found (Error 404): {error_info(body)}")
        raise KbsError(f"KBS Server Internal Failed, status {status}: {error_info(body)}")
    raise Unauthorized(f"KBS answered 401 Unauthorized {GET_RESOURCE_ATTEMPTS} times for {uri}")
