"""containerd's Go ttrpc client, with stubs generated from guest-components' protos, calls
the Python confidential-data-hub (GetResource) and attestation-agent (GetToken)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from guest.aa import config as aa_config
from guest.aa.agent import AttestationAgent
from guest.aa.service import AttestationAgentService
from guest.attesters.sample import SampleAttester
from guest.cdh import config as cdh_config
from guest.cdh.hub import Hub, make_kbc
from guest.cdh.service import CdhServices
from guest.kbs.keys import TeeKeyPair
from guest.kbs.token import Token
from protocols.ttrpc import Code, Server
from tests.guest.kbs_server import ALLOW_ALL, KbsState, LoopbackKbs
from tests.interop.peer import PeerError, require_peer

pytestmark = pytest.mark.interop

KEY1 = b"interop \x00\xff resource"


async def go_guest(address: str, call: str, arg: str = "") -> dict[str, Any]:
    args = [str(require_peer()), "guest", "--address", address, "--call", call, "--arg", arg]
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    if process.returncode != 0:
        raise PeerError(f"ttrpc-peer guest {call} exited {process.returncode}: {stderr!r}")
    result: dict[str, Any] = json.loads(stdout)
    return result


@pytest.fixture
async def guest(sockdir: Path) -> AsyncIterator[tuple[str, str, LoopbackKbs]]:
    require_peer()
    kbs = LoopbackKbs(KbsState(policy=ALLOW_ALL, resources={"default/key/key1": KEY1}))
    await kbs.start()
    agent = AttestationAgent(
        aa_config.parse(f'[token_configs.kbs]\nurl = "{kbs.url}"\n'), SampleAttester()
    )
    aa_server, cdh_server = Server(), Server()
    AttestationAgentService(agent).register(aa_server)
    aa_path, cdh_path = sockdir / "aa.sock", sockdir / "cdh.sock"
    await aa_server.start_unix(str(aa_path))
    config = cdh_config.parse(
        f'[kbc]\nname = "cc_kbc"\nurl = "{kbs.url}"\n[aa]\naa_socket = "unix://{aa_path}"\n'
    )
    hub = Hub(config, make_kbc(config, {}))
    CdhServices(hub).register(cdh_server)
    await cdh_server.start_unix(str(cdh_path))
    try:
        yield f"unix:{aa_path}", f"unix:{cdh_path}", kbs
    finally:
        await cdh_server.shutdown(grace=0)
        await hub.aclose()
        await aa_server.shutdown(grace=0)
        await agent.aclose()
        await kbs.aclose()


async def test_go_client_get_resource_and_get_token(guest: tuple[str, str, LoopbackKbs]) -> None:
    aa, cdh, kbs = guest
    resource = await go_guest(cdh, "get-resource", "kbs:///default/key/key1")
    assert resource["outcome"] is None
    assert base64.b64decode(resource["reply"]) == KEY1
    token = await go_guest(aa, "get-token", "kbs")
    assert token["outcome"] is None
    message = json.loads(base64.b64decode(token["reply"]))
    assert Token.parse(message["token"]).valid()
    TeeKeyPair.from_pem(message["tee_keypair"])
    assert kbs.state.attest_count == 1  # the CDH's fetch and the Go GetToken share a token
    tee = await go_guest(aa, "get-tee-type")
    assert (tee["tee"], tee["outcome"]) == ("sample", None)


async def test_go_client_sees_upstream_error_statuses(guest: tuple[str, str, LoopbackKbs]) -> None:
    aa, cdh, _ = guest
    refused = await go_guest(cdh, "get-resource", "kbs:///default/../key1")
    assert refused["outcome"]["code"] == Code.INTERNAL
    assert refused["outcome"]["message"] == "[CDH] [ERROR]: Get Resource failed"
    unknown = await go_guest(aa, "get-token", "nope")
    assert unknown["outcome"]["code"] == Code.INTERNAL
    assert unknown["outcome"]["message"] == "[ERROR:attestation-agent] AA-KBC get token failed"
