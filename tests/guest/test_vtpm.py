"""The vTPM and TPM attesters against a real software TPM (swtpm), Azure IMDS on loopback.

What swtpm cannot do is the paravisor's part: refresh the HCL report in NV 0x01400001 after
report data is written to 0x01400002. The tests provision a synthetic HCL report there.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from forwarder.userdata.safefs import SafeDir
from forwarder.userdata.tpm import extend_pcr8
from guest.attesters import az_vtpm, hcl
from guest.attesters.az_vtpm import VtpmSettings
from guest.attesters.base import InitDataResult
from guest.attesters.detect import Platform, detect_tee, make_attester
from guest.attesters.tpm import TpmAttester, TpmSettings
from guest.attesters.tsm import TsmReports
from guest.errors import AttesterError
from tests.guest.swtpm import SoftTpm, needs_swtpm, running_swtpm, tss

pytestmark = needs_swtpm

REPORT_DATA = hashlib.sha384(b"runtime data").digest()


@pytest.fixture
def swtpm(tmp_path: Path) -> Iterator[SoftTpm]:
    state = tmp_path / "tpmstate"
    state.mkdir()
    with running_swtpm(state) as soft:
        yield soft


@pytest.fixture
async def imds() -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """Azure IMDS: the THIM VCEK endpoint and the TD quote endpoint."""
    seen: dict[str, Any] = {"tdquote": [], "refuse_std": False}
    vcek_pem = _certificate().public_bytes(serialization.Encoding.PEM).decode()
    seen["vcek_pem"] = vcek_pem

    async def certification(request: web.Request) -> web.Response:
        if request.headers.get("Metadata") != "true":
            return web.Response(status=400)
        return web.json_response({"vcekCert": vcek_pem, "certificateChain": "chain"})

    async def tdquote(request: web.Request) -> web.Response:
        report = (await request.json())["report"]
        seen["tdquote"].append(report)
        if seen["refuse_std"] and ("+" in report or "/" in report or report.endswith("=")):
            return web.Response(status=400)
        raw = base64.urlsafe_b64decode(report + "=" * (-len(report) % 4))
        return web.json_response({"quote": base64.b64encode(b"QUOTE" + raw[:16]).decode()})

    app = web.Application()
    app.router.add_get("/metadata/THIM/amd/certification", certification)
    app.router.add_post("/acc/tdquote", tdquote)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


def _certificate() -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "SEV-VCEK")])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA384())
    )


def _hcl_report(report_type: int, ak_der: bytes) -> bytes:
    ak = serialization.load_der_public_key(ak_der)
    assert isinstance(ak, rsa.RSAPublicKey)
    numbers = ak.public_numbers()
    jwk = {
        "kid": "HCLAkPub",
        "kty": "RSA",
        "e": base64.urlsafe_b64encode(numbers.e.to_bytes(3, "big")).decode().rstrip("="),
        "n": base64.urlsafe_b64encode(numbers.n.to_bytes(256, "big")).decode().rstrip("="),
    }
    var_data = json.dumps({"keys": [jwk]}).encode()
    size = hcl.SNP_REPORT_SIZE if report_type == hcl.SNP_REPORT_TYPE else hcl.TD_REPORT_SIZE
    hw_report = bytes(range(256)) * (size // 256) + bytes(size % 256)
    return hcl.build(report_type, hw_report, var_data)


def _verify_quote(
    ak_der: bytes, message: bytes, rsa_signature: bytes, qualifying: bytes, pcrs: list[str]
) -> None:
    """The signature covers the message with the AK; the message is a TPM-generated quote
    of all 24 SHA-256 PCRs, over the PCR values given, with the expected qualifying data."""
    ak = serialization.load_der_public_key(ak_der)
    assert isinstance(ak, rsa.RSAPublicKey)
    ak.verify(rsa_signature, message, padding.PKCS1v15(), hashes.SHA256())
    attest, _ = tss.TPMS_ATTEST.unmarshal(message)
    assert attest.magic == tss.TPM2_GENERATED.VALUE
    assert attest.type == tss.TPM2_ST.ATTEST_QUOTE
    assert bytes(attest.extraData) == qualifying
    quote = attest.attested.quote
    assert quote.pcrSelect.count == 1
    assert quote.pcrSelect.pcrSelections[0].hash == tss.TPM2_ALG.SHA256
    assert bytes(quote.pcrSelect.pcrSelections[0].pcrSelect)[:3] == b"\xff\xff\xff"
    assert len(pcrs) == 24
    expected = hashlib.sha256(b"".join(bytes.fromhex(p) for p in pcrs)).digest()
    assert bytes(quote.pcrDigest) == expected


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text)


async def test_az_snp_vtpm_evidence(swtpm: SoftTpm, imds: tuple[str, dict[str, Any]]) -> None:
    url, seen = imds
    ak_der = swtpm.create_ak(az_vtpm.VTPM_AK_HANDLE)
    report = _hcl_report(hcl.SNP_REPORT_TYPE, ak_der)
    swtpm.define_nv(az_vtpm.HCL_REPORT_NV_INDEX, report)
    attester = az_vtpm.AzSnpVtpmAttester(VtpmSettings(swtpm.tcti, url, report_settle=0))
    await attester.extend_runtime_measurement(hashlib.sha256(b"event").digest(), 23)

    evidence = await attester.evidence(REPORT_DATA)

    assert list(evidence) == ["version", "tpm_quote", "hcl_report", "vcek"]
    assert evidence["version"] == 2
    assert _b64url(evidence["hcl_report"]) == report
    vcek = x509.load_pem_x509_certificate(seen["vcek_pem"].encode())
    assert _b64url(evidence["vcek"]) == vcek.public_bytes(serialization.Encoding.DER)
    quote = evidence["tpm_quote"]
    assert list(quote) == ["signature", "message", "pcrs"]
    _verify_quote(
        ak_der,
        bytes.fromhex(quote["message"]),
        bytes.fromhex(quote["signature"]),
        REPORT_DATA,
        quote["pcrs"],
    )
    assert quote["pcrs"][23] == swtpm.pcr(23).hex() != "00" * 32
    with swtpm.esapi() as esapi:  # the report data went to the paravisor's NV index
        index = esapi.tr_from_tpmpublic(az_vtpm.REPORT_DATA_NV_INDEX)
        written = bytes(esapi.nv_read(index, len(REPORT_DATA), 0, tss.ESYS_TR.OWNER))
    assert written == REPORT_DATA
    with pytest.raises(AttesterError, match="data too large"):
        await attester.evidence(bytes(65))


@pytest.mark.parametrize("refuse_std", [False, True])
async def test_az_tdx_vtpm_evidence(
    swtpm: SoftTpm, imds: tuple[str, dict[str, Any]], refuse_std: bool
) -> None:
    url, seen = imds
    seen["refuse_std"] = refuse_std
    ak_der = swtpm.create_ak(az_vtpm.VTPM_AK_HANDLE)
    report = _hcl_report(hcl.TDX_REPORT_TYPE, ak_der)
    swtpm.define_nv(az_vtpm.HCL_REPORT_NV_INDEX, report)
    attester = az_vtpm.AzTdxVtpmAttester(VtpmSettings(swtpm.tcti, url, report_settle=0))

    evidence = await attester.evidence(REPORT_DATA)

    assert list(evidence) == ["version", "tpm_quote", "hcl_report", "td_quote"]
    td_report = report[hcl.HW_REPORT_OFFSET : hcl.HW_REPORT_OFFSET + hcl.TD_REPORT_SIZE]
    assert seen["tdquote"][0] == base64.b64encode(td_report).decode()
    if refuse_std:  # the SDK's fallback: URL-safe base64 without padding
        assert seen["tdquote"][1] == base64.urlsafe_b64encode(td_report).decode().rstrip("=")
    assert _b64url(evidence["td_quote"]) == b"QUOTE" + td_report[:16]
    quote = evidence["tpm_quote"]
    _verify_quote(
        ak_der,
        bytes.fromhex(quote["message"]),
        bytes.fromhex(quote["signature"]),
        REPORT_DATA,
        quote["pcrs"],
    )


async def test_detection_reads_the_hcl_report_type(swtpm: SoftTpm, tmp_path: Path) -> None:
    no_tsm = TsmReports(tmp_path / "missing")
    platform = Platform(no_tsm, tmp_path, VtpmSettings(swtpm.tcti))
    assert detect_tee(platform) == "sample"  # a TPM without the HCL report is not Azure
    ak_der = swtpm.create_ak(az_vtpm.VTPM_AK_HANDLE)
    swtpm.define_nv(az_vtpm.HCL_REPORT_NV_INDEX, _hcl_report(hcl.TDX_REPORT_TYPE, ak_der))
    assert detect_tee(platform) == "az-tdx-vtpm"
    assert make_attester("auto", platform).tee == "az-tdx-vtpm"
    (tmp_path / "sys/devices/platform/sev-guest").mkdir(parents=True)
    assert detect_tee(platform) == "az-tdx-vtpm"  # before snp, as upstream


async def test_detection_snp_and_malformed_reports(swtpm: SoftTpm, tmp_path: Path) -> None:
    ak_der = swtpm.create_ak(az_vtpm.VTPM_AK_HANDLE)
    swtpm.define_nv(az_vtpm.HCL_REPORT_NV_INDEX, _hcl_report(hcl.SNP_REPORT_TYPE, ak_der))
    platform = Platform(TsmReports(tmp_path / "missing"), tmp_path, VtpmSettings(swtpm.tcti))
    assert detect_tee(platform) == "az-snp-vtpm"
    with swtpm.esapi() as esapi:  # an unknown report type is no Azure CVM
        index = esapi.tr_from_tpmpublic(az_vtpm.HCL_REPORT_NV_INDEX)
        esapi.nv_write(index, b"\x09\0\0\0", hcl.HCL_DATA_OFFSET + 8, tss.ESYS_TR.OWNER)
    assert detect_tee(platform) == "sample"
    tpm = TpmSettings(Path("/dev/null"), 0x81010002, swtpm.tcti)
    assert detect_tee(Platform(platform.tsm, tmp_path, platform.vtpm, tpm)) == "tpm"


def test_device_tcti_without_the_device_is_not_azure(tmp_path: Path) -> None:
    settings = VtpmSettings("device:/dev/tpm0")
    assert detect_tee(Platform(TsmReports(tmp_path / "x"), tmp_path, settings)) == "sample"


async def test_tpm_attester_evidence(swtpm: SoftTpm) -> None:
    ak_der = swtpm.create_ak(0x81010002)
    attester = TpmAttester(TpmSettings(Path("/dev/tpm0"), 0x81010002, swtpm.tcti))

    evidence = await attester.evidence(REPORT_DATA)

    assert list(evidence) == ["tpm_quote", "ak_public"]
    assert base64.b64decode(evidence["ak_public"]) == ak_der
    quote = evidence["tpm_quote"]
    signature, _ = tss.TPMT_SIGNATURE.unmarshal(base64.b64decode(quote["signature"]))
    assert signature.sigAlg == tss.TPM2_ALG.RSASSA
    assert signature.signature.rsassa.hash == tss.TPM2_ALG.SHA256
    _verify_quote(
        ak_der,
        base64.b64decode(quote["message"]),
        bytes(signature.signature.rsassa.sig),
        REPORT_DATA[:32],
        quote["pcrs"],
    )
    short = await attester.evidence(b"abc")
    attest, _ = tss.TPMS_ATTEST.unmarshal(base64.b64decode(short["tpm_quote"]["message"]))
    assert bytes(attest.extraData) == b"abc" + bytes(29)


@pytest.mark.parametrize("tee", ["az-snp-vtpm", "az-tdx-vtpm", "tpm"])
async def test_bind_init_data_extends_pcr8_once(swtpm: SoftTpm, tee: str) -> None:
    attester = _attester(tee, swtpm)
    digest = hashlib.sha256(b"initdata toml").digest()
    expected = hashlib.sha256(bytes(32) + digest).digest()

    assert await attester.bind_init_data(digest) is InitDataResult.OK
    assert swtpm.pcr(8) == expected
    assert await attester.bind_init_data(digest) is InitDataResult.OK
    assert swtpm.pcr(8) == expected  # already bound: not extended a second time
    with pytest.raises(AttesterError):
        await attester.bind_init_data(hashlib.sha384(b"initdata toml").digest())
    other = hashlib.sha256(b"other").digest()
    await attester.bind_init_data(other)  # a different digest is extended, as upstream
    assert swtpm.pcr(8) == hashlib.sha256(expected + other).digest()


def _attester(tee: str, swtpm: SoftTpm) -> Any:
    if tee == "tpm":
        return TpmAttester(TpmSettings(Path("/dev/tpm0"), 0x81010002, swtpm.tcti))
    return make_attester(tee, Platform(vtpm=VtpmSettings(swtpm.tcti)))


async def test_runtime_measurement_registers(swtpm: SoftTpm) -> None:
    attester = _attester("az-snp-vtpm", swtpm)
    event = hashlib.sha256(b"event").digest()
    await attester.extend_runtime_measurement(event, 23)
    assert await attester.get_runtime_measurement(23) == swtpm.pcr(23)
    assert swtpm.pcr(23) == hashlib.sha256(bytes(32) + event).digest()
    with pytest.raises(AttesterError, match="Invalid PCR index"):
        await attester.extend_runtime_measurement(event, 24)
    with pytest.raises(AttesterError, match="does not support getting"):
        await _attester("az-tdx-vtpm", swtpm).get_runtime_measurement(23)
    tpm = _attester("tpm", swtpm)
    assert await tpm.get_runtime_measurement(23) == swtpm.pcr(23)


@pytest.mark.skipif(shutil.which("tpm2_pcrextend") is None, reason="tpm2-tools not installed")
async def test_process_user_data_then_attestation_agent_extend_pcr8_once(
    swtpm: SoftTpm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pod VM image: process-user-data (PUD_EXTEND_PCR8) extends PCR 8 with
    tpm2_pcrextend; an attestation-agent binding the same digest later leaves it alone."""
    toml = b'version = "0.1.0"\nalgorithm = "sha256"\n[data]\n'
    digest = hashlib.sha256(toml).digest()
    monkeypatch.setenv("TPM2TOOLS_TCTI", swtpm.tcti)
    device = tmp_path / "tpmrm0"
    device.touch()
    with SafeDir.open(tmp_path / "peerpod") as root:
        extended = await extend_pcr8(
            root, digest.hex(), enabled=True, device=device, command="tpm2_pcrextend"
        )
    assert extended
    expected = hashlib.sha256(bytes(32) + digest).digest()
    assert swtpm.pcr(8) == expected
    for tee in ("az-snp-vtpm", "tpm"):
        assert await _attester(tee, swtpm).bind_init_data(digest) is InitDataResult.OK
    assert swtpm.pcr(8) == expected
