"""attestation_agent.AttestationAgentService over a real ttrpc connection."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from guest.aa import config as aa_config
from guest.aa.agent import AttestationAgent
from guest.aa.service import SERVICE, AttestationAgentService
from guest.attesters.sample import SampleAttester
from guest.kbs.keys import TeeKeyPair
from guest.kbs.token import Token
from protocols.kata import attestation_agent_pb2 as pb
from protocols.ttrpc import Client, Code, Server, TTRPCError
from protocols.ttrpc.testing import connect_pair
from tests.guest.kbs_server import LoopbackKbs


async def _client(config: aa_config.AaConfig) -> AsyncIterator[Client]:
    agent = AttestationAgent(config, SampleAttester())
    server = Server()
    AttestationAgentService(agent).register(server)
    client = await connect_pair(server)
    try:
        yield client
    finally:
        await client.aclose()
        await server.shutdown()
        await agent.aclose()


@pytest.fixture
async def aa(kbs: LoopbackKbs) -> AsyncIterator[Client]:
    config = aa_config.parse(f'[token_configs.kbs]\nurl = "{kbs.url}"\n')
    async for client in _client(config):
        yield client


async def test_get_token_kbs_returns_token_and_keypair(aa: Client, kbs: LoopbackKbs) -> None:
    reply = await aa.call(
        SERVICE, "GetToken", pb.GetTokenRequest(TokenType="kbs"), pb.GetTokenResponse
    )
    message = json.loads(reply.Token)
    assert list(message) == ["token", "tee_keypair"]
    assert Token.parse(message["token"]).valid()
    assert TeeKeyPair.from_pem(message["tee_keypair"]).algorithm == "ECDH-ES+A256KW-P256"
    again = await aa.call(
        SERVICE, "GetToken", pb.GetTokenRequest(TokenType="kbs"), pb.GetTokenResponse
    )
    assert again.Token == reply.Token and kbs.state.attest_count == 1  # cached


async def test_evidence_tee_type_and_statuses(aa: Client) -> None:
    reply = await aa.call(
        SERVICE, "GetEvidence", pb.GetEvidenceRequest(RuntimeData=b"abc"), pb.GetEvidenceResponse
    )
    assert json.loads(reply.Evidence) == {
        "svn": "1",
        "report_data": base64.b64encode(b"abc").decode(),
    }
    extra = await aa.call(
        SERVICE,
        "GetAdditionalEvidence",
        pb.GetAdditionalEvidenceRequest(RuntimeData=b"abc"),
        pb.GetEvidenceResponse,
    )
    assert extra.Evidence == b""
    tee = await aa.call(SERVICE, "GetTeeType", pb.GetTeeTypeRequest(), pb.GetTeeTypeResponse)
    assert tee.tee == "sample"
    tees = await aa.call(
        SERVICE, "GetAdditionalTees", pb.GetAdditionalTeesRequest(), pb.GetAdditionalTeesResponse
    )
    assert list(tees.additional_tees) == []
    measured = await aa.call(
        SERVICE,
        "ExtendRuntimeMeasurement",
        pb.ExtendRuntimeMeasurementRequest(Domain="d", Operation="o", Content="c"),
        pb.ExtendRuntimeMeasurementResponse,
    )
    assert measured.Result == pb.NOT_ENABLED
    with pytest.raises(TTRPCError) as raised:
        await aa.call(
            SERVICE, "BindInitData", pb.BindInitDataRequest(Digest=b"x"), pb.BindInitDataResponse
        )
    assert raised.value.code == Code.NOT_FOUND
    assert raised.value.message == f"/{SERVICE}/BindInitData is not supported"
    with pytest.raises(TTRPCError) as raised:
        await aa.call(
            SERVICE, "GetToken", pb.GetTokenRequest(TokenType="nope"), pb.GetTokenResponse
        )
    assert (raised.value.code, raised.value.message) == (
        Code.INTERNAL,
        "[ERROR:attestation-agent] AA-KBC get token failed",
    )


async def test_eventlog_enabled_on_sample_is_not_supported() -> None:
    config = aa_config.parse("[eventlog_config]\nenable_eventlog = true\n")
    async for client in _client(config):
        measured = await client.call(
            SERVICE,
            "ExtendRuntimeMeasurement",
            pb.ExtendRuntimeMeasurementRequest(
                Domain="d", Operation="o", Content="c", RegisterIndex=17
            ),
            pb.ExtendRuntimeMeasurementResponse,
        )
        assert measured.Result == pb.NOT_SUPPORTED


async def test_get_token_without_kbs_config_is_internal() -> None:
    async for client in _client(aa_config.AaConfig()):
        with pytest.raises(TTRPCError) as raised:
            await client.call(
                SERVICE, "GetToken", pb.GetTokenRequest(TokenType="kbs"), pb.GetTokenResponse
            )
        assert raised.value.code == Code.INTERNAL


def test_aa_toml_keys_and_fallbacks(tmp_path: Path) -> None:
    config = aa_config.parse(
        '[token_configs.kbs]\nurl = "https://kbs:8080"\ncert = "PEM"\n'
        'tee_key_algorithm = "RSA-OAEP-256"\n[token_configs.coco_as]\nurl = "http://as"\n'
        "[eventlog_config]\ninit_pcr = 9\nenable_eventlog = true\n"
        '[log]\nlevel = "debug"\n[unknown]\nkey = 1\n'
    )
    assert config.kbs == aa_config.KbsTokenConfig("https://kbs:8080", "PEM", "RSA-OAEP-256")
    assert config.coco_as == aa_config.CocoAsConfig("http://as")
    assert config.eventlog == aa_config.EventlogConfig(9, True)
    assert config.log_level == "debug"
    assert aa_config.parse("").kbs is None
    from_env = aa_config.from_kernel_cmdline({"AA_KBC_PARAMS": "cc_kbc::http://1.2.3.4:8080"}, "")
    assert from_env.kbs == aa_config.KbsTokenConfig("http://1.2.3.4:8080")
    cmdline = "quiet agent.aa_kbc_params=cc_kbc::http://kbs:80 ro"
    assert aa_config.from_kernel_cmdline({}, cmdline).kbs == aa_config.KbsTokenConfig(
        "http://kbs:80"
    )
    assert aa_config.from_kernel_cmdline({}, "quiet").kbs is None


async def test_get_token_coco_as_posts_evidence_to_the_as() -> None:
    seen: list[Any] = []

    async def attestation(request: web.Request) -> web.Response:
        seen.append(await request.json())
        return web.Response(text="as.token.jwt")

    app = web.Application()
    app.router.add_post("/attestation", attestation)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async for client in _client(aa_config.parse(f'[token_configs.coco_as]\nurl = "{url}"\n')):
            reply = await client.call(
                SERVICE, "GetToken", pb.GetTokenRequest(TokenType="coco_as"), pb.GetTokenResponse
            )
            assert reply.Token == b"as.token.jwt"
    finally:
        await runner.cleanup()
    (request,) = seen
    assert request["policy_ids"] == []
    (verification,) = request["verification_requests"]
    assert verification["tee"] == "sample"
    evidence = json.loads(base64.urlsafe_b64decode(verification["evidence"] + "=="))
    assert evidence == {"svn": "1", "report_data": ""}


def test_cli_flags_and_initdata_inputs(tmp_path: Path) -> None:
    from guest.aa.main import initdata_input, parser

    toml = b'algorithm = "sha384"\nversion = "0.1.0"\n[data]\n"aa.toml" = ""\n'
    (tmp_path / "initdata.toml").write_bytes(toml)
    digest = hashlib.sha384(toml).digest()
    args = parser().parse_args(
        ["-t", str(tmp_path / "initdata.toml"), "-i", base64.b64encode(b"x").decode()]
    )
    assert args.attestation_sock == (
        "unix:///run/confidential-containers/attestation-agent/attestation-agent.sock"
    )
    assert initdata_input(args) == (toml.decode(), digest)  # -t wins over -i
    args = parser().parse_args(
        [
            "--initdata-digest",
            base64.b64encode(digest).decode(),
            "--attestation_sock",
            "unix:///tmp/x.sock",
            "-c",
            "aa.toml",
        ]
    )
    assert initdata_input(args) == (None, digest)
    assert (args.attestation_sock, args.config_file) == ("unix:///tmp/x.sock", "aa.toml")
