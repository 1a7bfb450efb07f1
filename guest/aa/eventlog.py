"""The attestation agent's event log (AAEL), as guest-components writes it.

Each ``ExtendRuntimeMeasurement`` call is one event ``"<domain> <operation> <content>"``,
stored in ``/run/attestation-agent/eventlog`` as a TCG2 (crypto-agile) event entry:

    u32 register (the CC measurement register of the configured ``init_pcr``, as upstream)
    u32 event type EV_EVENT_TAG (6), u32 digest count (1), u16 TCG algorithm id, digest,
    u32 event size, then the tagged event: u32 id "AAEL" (0x4141454c), u32 size, the text.

The digest (the platform's CCEL hash over the tagged event) extends the TEE register behind
the PCR. A write-ahead record (``.wal_event_entry``: u64 big-endian log offset, the expected
register value, the event text) makes "extend the register, then append the entry" safe
against a crash in between: on start, a leftover record is completed or refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from guest.attesters.base import MeasurementRegister
from guest.errors import GuestError

log = logging.getLogger(__name__)

EVENTLOG_DIR = Path("/run/attestation-agent")
EVENTLOG_NAME = "eventlog"
WAL_NAME = ".wal_event_entry"

EV_EVENT_TAG = 0x6
AAEL_TAGGED_EVENT_ID = 0x4141454C
# kbs-types HashAlgorithm -> TCG algorithm id
TCG_ALGORITHMS = {"sha256": 0xB, "sha384": 0xC, "sha512": 0xD}


class EventLogError(GuestError):
    pass


@dataclass(frozen=True, slots=True)
class Event:
    domain: str
    operation: str
    content: str

    def __post_init__(self) -> None:
        if "\n" in self.content:
            raise EventLogError("content contains newline")

    def __str__(self) -> str:
        return f"{self.domain} {self.operation} {self.content}"

    @classmethod
    def parse(cls, text: str) -> Event:
        """The inverse of ``str``: the first two spaces split domain and operation."""
        domain, sep, rest = text.partition(" ")
        operation, sep2, content = rest.partition(" ")
        if not sep or not sep2:
            raise EventLogError(f"not an event string: {text[:60]!r}")
        return cls(domain, operation, content)


def digest(algorithm: str, data: bytes) -> bytes:
    if algorithm not in TCG_ALGORITHMS:
        raise EventLogError(f"unsupported event log hash algorithm {algorithm!r}")
    return hashlib.new(algorithm, data).digest()


def tcg2_entry(event: Event, register: int, algorithm: str) -> tuple[bytes, bytes]:
    """(the TCG2 entry bytes, the digest that extends the register)."""
    text = str(event).encode()
    tagged = struct.pack("<II", AAEL_TAGGED_EVENT_ID, len(text)) + text
    event_digest = digest(algorithm, tagged)
    entry = (
        struct.pack("<IIIH", register, EV_EVENT_TAG, 1, TCG_ALGORITHMS[algorithm])
        + event_digest
        + struct.pack("<I", len(tagged))
        + tagged
    )
    return entry, event_digest


@dataclass(frozen=True, slots=True)
class WalRecord:
    offset: int
    expected: bytes
    event: str

    def encode(self) -> bytes:
        return struct.pack(">Q", self.offset) + self.expected + self.event.encode()

    @classmethod
    def decode(cls, raw: bytes, digest_len: int) -> WalRecord:
        if len(raw) < 8 + digest_len:
            raise EventLogError("short write-ahead record")
        (offset,) = struct.unpack_from(">Q", raw)
        return cls(offset, raw[8 : 8 + digest_len], raw[8 + digest_len :].decode())


def _write_synced(path: Path, data: bytes, *, offset: int | None = None) -> int:
    """Write ``data`` at ``offset`` (or create/replace the file); the new end position."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if offset is None else 0)
    fd = os.open(path, flags, 0o644)
    try:
        os.lseek(fd, offset or 0, os.SEEK_SET)
        os.write(fd, data)
        os.fdatasync(fd)
        return os.lseek(fd, 0, os.SEEK_CUR)
    finally:
        os.close(fd)


class EventLog:
    def __init__(self, register: MeasurementRegister, init_pcr: int, directory: Path) -> None:
        self.register = register
        self.init_pcr = init_pcr
        self.path = directory / EVENTLOG_NAME
        self.wal = directory / WAL_NAME
        self.algorithm = register.ccel_hash_algorithm()
        self.position = 0
        self._lock = asyncio.Lock()

    @classmethod
    async def open(
        cls, register: MeasurementRegister, init_pcr: int, directory: Path = EVENTLOG_DIR
    ) -> EventLog:
        """Create the directory and log, and finish an entry a crash left half done."""
        eventlog = cls(register, init_pcr, directory)
        await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(eventlog.path.touch, exist_ok=True)
        eventlog.position = eventlog.path.stat().st_size
        if eventlog.wal.exists():
            await eventlog._recover()
        return eventlog

    async def _recover(self) -> None:
        try:
            raw = await asyncio.to_thread(self.wal.read_bytes)
            record = WalRecord.decode(raw, len(digest(self.algorithm, b"")))
            event = Event.parse(record.event)
        except (OSError, UnicodeDecodeError, EventLogError) as exc:
            raise EventLogError(
                "Failed to read wal cache. This is a significant error caused by a previous "
                f"crash. Please try delete `{self.wal}` and restart the attestation agent."
            ) from exc
        log.warning("Recover from a previous crash.")
        ccmr = self.register.pcr_to_ccmr(self.init_pcr)
        entry, event_digest = tcg2_entry(event, ccmr, self.algorithm)
        current = await self.register.get_runtime_measurement(self.init_pcr)
        if current != record.expected:
            if digest(self.algorithm, current + event_digest) != record.expected:
                raise EventLogError(
                    f"fatal error when recovering. The eventlog file {self.path} is probably "
                    f"corrupted, or other process has extend the target PCR {self.init_pcr}."
                )
            await self.register.extend_runtime_measurement(event_digest, self.init_pcr)
        self.position = await asyncio.to_thread(
            _write_synced, self.path, entry, offset=record.offset
        )
        await asyncio.to_thread(self.wal.unlink)

    async def extend(self, event: Event, pcr: int) -> None:
        """Extend the register behind ``pcr`` with the event and append its entry."""
        async with self._lock:
            # the entry names the register of init_pcr whatever ``pcr`` is, as upstream
            ccmr = self.register.pcr_to_ccmr(self.init_pcr)
            entry, event_digest = tcg2_entry(event, ccmr, self.algorithm)
            current = await self.register.get_runtime_measurement(pcr)
            expected = digest(self.algorithm, current + event_digest)
            record = WalRecord(self.position, expected, str(event))
            await asyncio.to_thread(_write_synced, self.wal, record.encode())
            await self.register.extend_runtime_measurement(event_digest, pcr)
            self.position = await asyncio.to_thread(
                _write_synced, self.path, entry, offset=self.position
            )
            await asyncio.to_thread(self.wal.unlink)
