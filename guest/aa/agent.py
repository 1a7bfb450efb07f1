"""The attestation agent: one primary attester, token getters, the runtime measurement."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import aiohttp

from guest.aa.coco_as import get_token as coco_as_token
from guest.aa.config import AaConfig
from guest.aa.eventlog import EVENTLOG_DIR, Event, EventLog, EventLogError
from guest.attesters.base import Attester, InitDataResult
from guest.errors import GuestConfigError
from guest.kbs.client import RcarClient
from guest.kbs.http import new_session

log = logging.getLogger(__name__)

KBS = "kbs"
COCO_AS = "coco_as"


class RuntimeMeasurement:
    OK = 0
    NOT_SUPPORTED = 1
    NOT_ENABLED = 2


class _Evidence:
    """The attester as the KBS client's evidence provider (no additional devices)."""

    def __init__(self, attester: Attester) -> None:
        self.attester = attester
        self.tee = attester.tee

    async def primary_evidence(self, report_data: bytes) -> Any:
        return await self.attester.evidence(report_data)

    async def additional_evidence(self, report_data: bytes) -> str:
        return ""


class AttestationAgent:
    def __init__(
        self,
        config: AaConfig,
        attester: Attester,
        *,
        initdata_toml: str | None = None,
        eventlog_dir: Path = EVENTLOG_DIR,
    ) -> None:
        self.config = config
        self.attester = attester
        self.initdata_toml = initdata_toml
        self.eventlog_dir = eventlog_dir
        self._eventlog: EventLog | None = None
        self._session: aiohttp.ClientSession | None = None
        self._as_session: aiohttp.ClientSession | None = None
        self._kbs: RcarClient | None = None
        self._lock = asyncio.Lock()

    @property
    def tee(self) -> str:
        return self.attester.tee

    def additional_tees(self) -> list[str]:
        return []

    async def get_evidence(self, runtime_data: bytes) -> bytes:
        evidence = await self.attester.evidence(runtime_data)
        return json.dumps(evidence, separators=(",", ":")).encode()

    async def get_additional_evidence(self, runtime_data: bytes) -> bytes:
        log.info("No additional attesters configured, returning empty evidence.")
        return b""

    async def get_token(self, token_type: str, *, renew: bool = False) -> bytes:
        """``renew`` skips the cache (a caller whose cached token the KBS refused)."""
        if token_type == KBS:
            client = await self.kbs_client()
            token, tee_key = await client.get_token(renew)
            message = {"token": token.content, "tee_keypair": tee_key.to_pem()}
            return json.dumps(message, separators=(",", ":")).encode()
        if token_type == COCO_AS:
            coco_as = self.config.coco_as
            if coco_as is None:
                raise GuestConfigError("coco_as token config not configured in config file")
            if self._as_session is None:
                self._as_session = new_session(None)
            return await coco_as_token(self._as_session, coco_as.url, self.attester)
        raise GuestConfigError(f"Unsupported token type {token_type!r}")

    async def kbs_client(self) -> RcarClient:
        async with self._lock:
            if self._kbs is None:
                kbs = self.config.kbs
                if kbs is None:
                    raise GuestConfigError("kbs token config not configured in config file")
                self._session = new_session(kbs.cert)
                self._kbs = RcarClient(
                    kbs.url,
                    self._session,
                    _Evidence(self.attester),
                    key_algorithm=kbs.tee_key_algorithm,
                    initdata_toml=self.initdata_toml,
                )
            return self._kbs

    async def extend_runtime_measurement(
        self, domain: str, operation: str, content: str, register_index: int | None
    ) -> int:
        if not self.config.eventlog.enable_eventlog:
            return RuntimeMeasurement.NOT_ENABLED
        if not self.attester.supports_runtime_measurement():
            return RuntimeMeasurement.NOT_SUPPORTED
        event = Event(domain, operation, content)
        pcr = self.config.eventlog.init_pcr if register_index is None else register_index
        try:
            eventlog = await self.init()
            if eventlog is None:
                return RuntimeMeasurement.NOT_SUPPORTED
            await eventlog.extend(event, pcr)
        except OSError as exc:
            raise EventLogError(f"event log: {exc}") from exc
        return RuntimeMeasurement.OK

    async def init(self) -> EventLog | None:
        """Open the event log (finishing a crashed entry) when enabled and supported.

        Upstream opens it whenever it is enabled, and cannot do so on a TEE without a
        runtime measurement register; here such a TEE answers NOT_SUPPORTED instead.
        """
        eventlog = self.config.eventlog
        if not eventlog.enable_eventlog or not self.attester.supports_runtime_measurement():
            return None
        async with self._lock:
            if self._eventlog is None:
                self._eventlog = await EventLog.open(
                    self.attester, eventlog.init_pcr, self.eventlog_dir
                )
            return self._eventlog

    async def bind_init_data(self, digest: bytes) -> InitDataResult:
        return await self.attester.bind_init_data(digest)

    async def aclose(self) -> None:
        for session in (self._session, self._as_session):
            if session is not None:
                await session.close()
