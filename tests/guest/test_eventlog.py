"""ExtendRuntimeMeasurement and the AAEL: TCG2 entries, RTMR extension, crash recovery.

The TDX register is a fake tdx_guest sysfs ``measurements`` directory whose ``rtmr<N>:sha384``
files extend like the kernel's: a write of 48 bytes sets the file to SHA-384(old || data).
"""

from __future__ import annotations

import base64
import hashlib
import struct
from pathlib import Path

import pytest

from guest.aa.agent import AttestationAgent, RuntimeMeasurement
from guest.aa.config import AaConfig, EventlogConfig
from guest.aa.eventlog import WAL_NAME, Event, EventLog, EventLogError, tcg2_entry
from guest.aa.service import SERVICE, AttestationAgentService
from guest.attesters.base import Attester
from guest.attesters.ccel import EL_HEADER, trim_ccel
from guest.attesters.sample import SampleAttester
from guest.attesters.tdx import TdxAttester
from guest.attesters.tsm import TsmReports
from guest.errors import AttesterError
from protocols.kata import attestation_agent_pb2 as pb
from protocols.ttrpc import Code, Server, TTRPCError
from protocols.ttrpc.testing import connect_pair


class KernelRtmrs(TdxAttester):
    """A TDX attester over a fake sysfs tree; a write to an RTMR file extends it."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        for n in range(4):
            (root / f"rtmr{n}:sha384").write_bytes(bytes(48))
        (root / "mrconfigid").write_bytes(bytes(48))
        super().__init__(
            TsmReports(root / "no-tsm"),
            measurements=root,
            ccel=root / "CCEL",
            aael=root.parent / "run/aa/eventlog",
        )
        self.extended: list[tuple[int, bytes]] = []
        self.fail_next_extend = False

    async def extend_runtime_measurement(self, event_digest: bytes, pcr: int) -> None:
        if self.fail_next_extend:
            self.fail_next_extend = False
            raise AttesterError("simulated crash before the extend")
        path = self._rtmr_path(pcr)
        old = path.read_bytes()
        await super().extend_runtime_measurement(event_digest, pcr)
        written = path.read_bytes()  # what the attester wrote: the padded digest
        assert len(written) == 48
        path.write_bytes(hashlib.sha384(old + written).digest())
        self.extended.append((pcr, written))


def rtmr(root: Path, n: int) -> bytes:
    return (root / f"rtmr{n}:sha384").read_bytes()


def parse_entries(raw: bytes) -> list[tuple[int, int, int, bytes, bytes]]:
    """(register, type, alg, digest, event text) per TCG2 entry, read independently."""
    out, pos = [], 0
    while pos < len(raw):
        register, etype, count, alg = struct.unpack_from("<IIIH", raw, pos)
        assert count == 1 and alg == 0xC
        pos += 14
        digest = raw[pos : pos + 48]
        pos += 48
        (size,) = struct.unpack_from("<I", raw, pos)
        tagged = raw[pos + 4 : pos + 4 + size]
        pos += 4 + size
        tag, text_len = struct.unpack_from("<II", tagged)
        assert tag == 0x4141454C and text_len == size - 8
        assert hashlib.sha384(tagged).digest() == digest
        out.append((register, etype, alg, digest, tagged[8:]))
    return out


def agent(tmp_path: Path, attester: Attester, *, enabled: bool = True) -> AttestationAgent:
    config = AaConfig(eventlog=EventlogConfig(init_pcr=17, enable_eventlog=enabled))
    return AttestationAgent(config, attester, eventlog_dir=tmp_path / "run/aa")


def test_tcg2_entry_bytes() -> None:
    entry, digest = tcg2_entry(Event("github.com", "pull", "image@sha256:00"), 4, "sha256")
    text = b"github.com pull image@sha256:00"
    tagged = b"LEAA" + struct.pack("<I", len(text)) + text
    assert digest == hashlib.sha256(tagged).digest()
    assert entry == (
        struct.pack("<IIIH", 4, 6, 1, 0xB) + digest + struct.pack("<I", len(tagged)) + tagged
    )
    with pytest.raises(EventLogError, match="newline"):
        Event("d", "o", "two\nlines")
    assert Event.parse("d op some content") == Event("d", "op", "some content")


async def test_extend_writes_log_and_rtmr(tmp_path: Path) -> None:
    tdx = KernelRtmrs(tmp_path / "measurements")
    aa = agent(tmp_path, tdx)
    assert await aa.extend_runtime_measurement("dom", "op", "c1", None) == RuntimeMeasurement.OK
    assert await aa.extend_runtime_measurement("dom", "op2", "c 2", 10) == RuntimeMeasurement.OK
    entries = parse_entries((tmp_path / "run/aa/eventlog").read_bytes())
    # both entries name CC MR 4 (RTMR3, from init_pcr 17), as upstream does
    assert [(e[0], e[1], e[4]) for e in entries] == [(4, 6, b"dom op c1"), (4, 6, b"dom op2 c 2")]
    # pcr 17 -> RTMR3, pcr 10 -> RTMR2
    expected3 = hashlib.sha384(bytes(48) + entries[0][3]).digest()
    expected2 = hashlib.sha384(bytes(48) + entries[1][3]).digest()
    assert rtmr(tdx.measurements, 3) == expected3
    assert rtmr(tdx.measurements, 2) == expected2
    assert rtmr(tdx.measurements, 0) == bytes(48)
    assert not (tmp_path / "run/aa" / WAL_NAME).exists()


async def test_log_is_appended_across_restarts(tmp_path: Path) -> None:
    tdx = KernelRtmrs(tmp_path / "measurements")
    await agent(tmp_path, tdx).extend_runtime_measurement("a", "b", "1", None)
    await agent(tmp_path, tdx).extend_runtime_measurement("a", "b", "2", None)
    texts = [e[4] for e in parse_entries((tmp_path / "run/aa/eventlog").read_bytes())]
    assert texts == [b"a b 1", b"a b 2"]


async def test_statuses_when_disabled_or_unsupported(tmp_path: Path) -> None:
    tdx = KernelRtmrs(tmp_path / "measurements")
    disabled = agent(tmp_path, tdx, enabled=False)
    assert await disabled.extend_runtime_measurement("a", "b", "c", None) == 2  # NOT_ENABLED
    sample = agent(tmp_path, SampleAttester())
    assert await sample.extend_runtime_measurement("a", "b", "c", None) == 1  # NOT_SUPPORTED
    no_sysfs = TdxAttester(TsmReports(tmp_path / "x"), measurements=tmp_path / "absent")
    assert await agent(tmp_path, no_sysfs).extend_runtime_measurement("a", "b", "c", None) == 1
    assert not (tmp_path / "run/aa/eventlog").exists()
    assert tdx.extended == []


async def test_recovery_completes_an_entry_whose_extend_did_not_happen(tmp_path: Path) -> None:
    tdx = KernelRtmrs(tmp_path / "measurements")
    aa = agent(tmp_path, tdx)
    await aa.extend_runtime_measurement("a", "b", "first", None)
    tdx.fail_next_extend = True
    with pytest.raises(AttesterError):
        await aa.extend_runtime_measurement("a", "b", "second", None)
    assert (tmp_path / "run/aa" / WAL_NAME).exists()
    await EventLog.open(tdx, 17, tmp_path / "run/aa")  # a restarted agent
    entries = parse_entries((tmp_path / "run/aa/eventlog").read_bytes())
    assert [e[4] for e in entries] == [b"a b first", b"a b second"]
    replay = bytes(48)
    for entry in entries:
        replay = hashlib.sha384(replay + entry[3]).digest()
    assert rtmr(tdx.measurements, 3) == replay
    assert not (tmp_path / "run/aa" / WAL_NAME).exists()


async def test_recovery_after_extend_only_writes_the_entry(tmp_path: Path) -> None:
    tdx = KernelRtmrs(tmp_path / "measurements")
    log_dir = tmp_path / "run/aa"
    eventlog = await EventLog.open(tdx, 17, log_dir)
    event = Event("a", "b", "c")
    _, digest = tcg2_entry(event, 4, "sha384")
    expected = hashlib.sha384(bytes(48) + digest).digest()
    (log_dir / WAL_NAME).write_bytes(struct.pack(">Q", 0) + expected + b"a b c")
    await tdx.extend_runtime_measurement(digest, 17)  # crashed after the extend
    await EventLog.open(tdx, 17, log_dir)
    assert [e[4] for e in parse_entries((log_dir / "eventlog").read_bytes())] == [b"a b c"]
    assert rtmr(tdx.measurements, 3) == expected and len(tdx.extended) == 1
    assert eventlog.position == 0


async def test_recovery_refuses_a_register_extended_by_someone_else(tmp_path: Path) -> None:
    tdx = KernelRtmrs(tmp_path / "measurements")
    log_dir = tmp_path / "run/aa"
    log_dir.mkdir(parents=True)
    (log_dir / WAL_NAME).write_bytes(struct.pack(">Q", 0) + b"\x01" * 48 + b"a b c")
    with pytest.raises(EventLogError, match="other process has extend the target PCR 17"):
        await EventLog.open(tdx, 17, log_dir)
    (log_dir / WAL_NAME).write_bytes(b"short")
    with pytest.raises(EventLogError, match="Failed to read wal cache"):
        await EventLog.open(tdx, 17, log_dir)


def test_pcr_to_rtmr_mapping(tmp_path: Path) -> None:
    tdx = KernelRtmrs(tmp_path / "m")
    got = {pcr: tdx.pcr_to_ccmr(pcr) for pcr in (0, 1, 2, 6, 7, 8, 15, 16, 17, 23)}
    assert got == {0: 4, 1: 1, 2: 2, 6: 2, 7: 1, 8: 3, 15: 3, 16: 4, 17: 4, 23: 4}


def ccel_event(register: int, etype: int, digest: bytes, data: bytes) -> bytes:
    return (
        struct.pack("<IIIH", register, etype, 1, 0xC) + digest + struct.pack("<I", len(data)) + data
    )


def firmware_ccel() -> tuple[bytes, bytes]:
    """(a CCEL table with its end marker and padding, the part upstream keeps)."""
    spec_id = b"Spec ID Event03\0" + bytes(21)
    header = struct.pack("<II", 0, 3) + bytes(20) + struct.pack("<I", len(spec_id)) + spec_id
    events = ccel_event(1, 0x80000001, b"\x11" * 48, b"efi") + ccel_event(2, 0xD, b"\x22" * 48, b"")
    return header + events + b"\xff" * 8 + bytes(64), header + events


def test_trim_ccel_stops_at_the_end_marker() -> None:
    table, kept = firmware_ccel()
    assert trim_ccel(table) == kept
    assert trim_ccel(kept + bytes(8)) == kept  # a zero marker ends it too
    with pytest.raises(AttesterError, match="no end flag"):
        trim_ccel(kept)
    header = kept[: 4 + 4 + 20 + 4 + 37]
    bad = header + struct.pack("<IIIH", 1, 1, 1, 0x99) + bytes(64) + b"\xff" * 8
    with pytest.raises(AttesterError, match="unsupported digest algorithm"):
        trim_ccel(bad)


async def test_tdx_evidence_carries_ccel_and_aael(tmp_path: Path) -> None:
    from tests.guest.fake_configfs import FakeTsmConfigFs

    tdx = KernelRtmrs(tmp_path / "measurements")
    tsm_root = tmp_path / "tsm"
    tsm_root.mkdir()
    tdx.tsm = TsmReports(tsm_root, fs=FakeTsmConfigFs("tdx_guest"))
    assert (await tdx.evidence(b"r"))["cc_eventlog"] is None
    await agent(tmp_path, tdx).extend_runtime_measurement("d", "o", "c", None)
    aael = (tmp_path / "run/aa/eventlog").read_bytes()
    log = base64.b64decode((await tdx.evidence(b"r"))["cc_eventlog"])
    assert log == EL_HEADER + aael + b"\xff" * 8  # no CCEL: the fixed header first
    table, kept = firmware_ccel()
    (tdx.measurements / "CCEL").write_bytes(table)
    log = base64.b64decode((await tdx.evidence(b"r"))["cc_eventlog"])
    assert log == kept + aael + b"\xff" * 8


async def test_unwritable_log_directory_is_a_guest_error(tmp_path: Path) -> None:
    tdx = KernelRtmrs(tmp_path / "measurements")
    blocker = tmp_path / "run"
    blocker.write_bytes(b"")  # a file where the log directory should be
    with pytest.raises(EventLogError, match="event log"):
        await agent(tmp_path, tdx).extend_runtime_measurement("a", "b", "c", None)
    assert tdx.extended == []


async def test_extend_over_ttrpc_with_upstream_statuses(tmp_path: Path) -> None:
    tdx = KernelRtmrs(tmp_path / "measurements")
    aa = agent(tmp_path, tdx)
    server = Server()
    AttestationAgentService(aa).register(server)
    client = await connect_pair(server)
    try:
        request = pb.ExtendRuntimeMeasurementRequest(Domain="d", Operation="o", Content="c")
        reply = await client.call(
            SERVICE, "ExtendRuntimeMeasurement", request, pb.ExtendRuntimeMeasurementResponse
        )
        assert reply.Result == pb.OK
        assert [e[4] for e in parse_entries((tmp_path / "run/aa/eventlog").read_bytes())] == [
            b"d o c"
        ]
        bad = pb.ExtendRuntimeMeasurementRequest(Domain="d", Operation="o", Content="c\nx")
        with pytest.raises(TTRPCError) as raised:
            await client.call(
                SERVICE, "ExtendRuntimeMeasurement", bad, pb.ExtendRuntimeMeasurementResponse
            )
        assert (raised.value.code, raised.value.message) == (
            Code.INTERNAL,
            "[ERROR:attestation-agent] AA extend runtime measurement failed",
        )
    finally:
        await client.aclose()
        await server.shutdown()
        await aa.aclose()
