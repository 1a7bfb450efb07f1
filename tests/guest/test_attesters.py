"""configfs-tsm against a fake tree, the TDX and sample attesters, detection."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from guest.attesters.detect import Platform, detect_tee, make_attester
from guest.attesters.sample import SampleAttester
from guest.attesters.tdx import TdxAttester
from guest.attesters.tsm import TsmReports
from guest.errors import AttesterError
from tests.guest.fake_configfs import FakeTsmConfigFs, fake_quote


def tsm_tree(tmp_path: Path, fs: FakeTsmConfigFs) -> TsmReports:
    root = tmp_path / "sys/kernel/config/tsm/report"
    root.mkdir(parents=True)
    return TsmReports(root, fs=fs)


def test_report_reads_outblob_and_removes_its_directory(tmp_path: Path) -> None:
    fs = FakeTsmConfigFs()
    tsm = tsm_tree(tmp_path, fs)
    report = tsm.report(b"\x01" * 64, wanted="tdx", aux=True)
    assert report.provider == "tdx"
    assert report.outblob == fake_quote(b"\x01" * 64)
    assert report.auxblob == b"CERTS"
    assert list(tsm.root.iterdir()) == []
    assert len(fs.made) == 1


def test_generation_race_is_retried_in_a_fresh_directory(tmp_path: Path) -> None:
    fs = FakeTsmConfigFs(races=2)
    tsm = tsm_tree(tmp_path, fs)
    assert tsm.report(b"x", wanted="tdx").outblob == fake_quote(b"x")
    assert len(fs.made) == 3 and len(set(fs.made)) == 3


def test_generation_that_never_settles_fails(tmp_path: Path) -> None:
    tsm = tsm_tree(tmp_path, FakeTsmConfigFs(races=10))
    with pytest.raises(AttesterError, match="generation kept changing"):
        tsm.report(b"x", wanted="tdx")
    assert list(tsm.root.iterdir()) == []


def test_wrong_provider_and_bad_inblob(tmp_path: Path) -> None:
    tsm = tsm_tree(tmp_path, FakeTsmConfigFs("sev_guest"))
    assert tsm.provider() == "snp"
    with pytest.raises(AttesterError, match="provider is snp, wanted tdx"):
        tsm.report(b"x", wanted="tdx")
    with pytest.raises(AttesterError, match=r"1\.\.64 bytes"):
        tsm.report(b"x" * 65, wanted="snp")
    with pytest.raises(AttesterError, match=r"1\.\.64 bytes"):
        tsm.report(b"", wanted="snp")


def test_privlevel_is_written_before_inblob(tmp_path: Path) -> None:
    tsm = tsm_tree(tmp_path, FakeTsmConfigFs("sev_guest"))
    assert tsm.report(b"r", wanted="snp", privlevel=0).outblob == fake_quote(b"r")


async def test_tdx_evidence_pads_report_data_and_adds_the_eventlog(tmp_path: Path) -> None:
    tsm = tsm_tree(tmp_path, FakeTsmConfigFs())
    ccel = tmp_path / "CCEL"
    attester = TdxAttester(tsm, ccel=ccel, aael=tmp_path / "aael")
    digest = bytes(range(48))
    evidence = await attester.evidence(digest)
    assert evidence == {
        "cc_eventlog": None,
        "quote": base64.b64encode(fake_quote(digest + bytes(16))).decode(),
    }
    with pytest.raises(AttesterError, match="no more than 64 bytes"):
        await attester.evidence(bytes(65))


def test_detection_order_and_forcing(tmp_path: Path) -> None:
    tdx = tsm_tree(tmp_path / "a", FakeTsmConfigFs("tdx_guest"))
    assert detect_tee(Platform(tdx, tmp_path)) == "tdx"
    absent = TsmReports(tmp_path / "missing")
    assert detect_tee(Platform(absent, tmp_path)) == "sample"
    (tmp_path / "sys/devices/platform/sev-guest").mkdir(parents=True)
    assert detect_tee(Platform(absent, tmp_path)) == "snp"
    assert isinstance(make_attester("sample", Platform(tdx, tmp_path)), SampleAttester)
    assert isinstance(make_attester("tdx", Platform(absent, tmp_path)), TdxAttester)


def test_auto_falls_back_to_sample_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    attester = make_attester("auto", Platform(TsmReports(tmp_path / "missing"), tmp_path))
    assert attester.tee == "sample"
    assert "Sample Attester will be used" in caplog.text
    (tmp_path / "sys/devices/platform/sev-guest").mkdir(parents=True)
    snp = make_attester("auto", Platform(TsmReports(tmp_path / "missing"), tmp_path))
    assert snp.tee == "snp"
