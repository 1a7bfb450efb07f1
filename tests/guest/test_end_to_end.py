"""End to end on loopback: initdata -> process-user-data's files -> the three daemons with
upstream's flags -> HTTP on api-server-rest -> CDH -> AA -> loopback Trustee KBS."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from forwarder.userdata.initdata import initdata_files
from forwarder.userdata.provision import commit_all
from forwarder.userdata.safefs import SafeDir
from guest.kbs.keys import TeeKeyPair
from guest.kbs.token import Token
from protocols import initdata
from tests.guest.conftest import KEY1
from tests.guest.daemons import BIN, Daemons, free_port, run_daemons
from tests.guest.kbs_server import DEFAULT_POLICY, LoopbackKbs


def initdata_toml(kbs_url: str, aa_socket: Path, cdh_socket: Path) -> bytes:
    aa = f'[token_configs.kbs]\nurl = "{kbs_url}"\n'
    cdh = (
        f'socket = "unix://{cdh_socket}"\n'
        f'[aa]\naa_socket = "unix://{aa_socket}"\n'
        f'[kbc]\nname = "cc_kbc"\nurl = "{kbs_url}"\n'
    )
    return (
        'algorithm = "sha384"\nversion = "0.1.0"\n[data]\n'
        f"\"aa.toml\" = '''\n{aa}'''\n\"cdh.toml\" = '''\n{cdh}'''\n"
    ).encode()


@pytest.fixture
async def daemons(kbs: LoopbackKbs, tmp_path: Path) -> AsyncIterator[Daemons]:
    peerpod = tmp_path / "peerpod"
    peerpod.mkdir()
    toml = initdata_toml(kbs.url, tmp_path / "aa.sock", tmp_path / "cdh.sock")
    (peerpod / "initdata").write_text(initdata.encode(toml))
    with SafeDir.open(peerpod) as root:
        commit_all(root, initdata_files(root, None).files)
    async with run_daemons(
        tmp_path, peerpod / "aa.toml", peerpod / "cdh.toml", tmp_path / "cdh.sock", free_port()
    ) as running:
        yield running


async def test_resource_and_token_over_http(
    daemons: Daemons, kbs: LoopbackKbs, tmp_path: Path
) -> None:
    base = f"http://127.0.0.1:{daemons.port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/cdh/resource/default/key/key1") as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "application/octet-stream"
            assert await response.read() == KEY1
        async with http.get(f"{base}/aa/token?token_type=kbs") as response:
            assert response.status == 200
            message = json.loads(await response.read())
        assert Token.parse(message["token"]).valid()
        TeeKeyPair.from_pem(message["tee_keypair"])
        async with http.get(f"{base}/info") as response:
            info = await response.json()
        assert info["tee"] == "sample" and info["feature"] == "all"
        # the second resource reuses the AA's cached token: still one attestation
        async with http.get(f"{base}/cdh/resource/default/key/key1") as response:
            assert await response.read() == KEY1
        assert kbs.state.attest_count == 1
        async with http.get(f"{base}/cdh/resource/default/key/missing") as response:
            assert response.status == 500
            assert await response.text() == "CDH ttrpc error: [CDH] [ERROR]: Get Resource failed"
        kbs.state.policy = DEFAULT_POLICY
        async with http.get(f"{base}/cdh/resource/default/key/key1") as response:
            assert response.status == 500
        async with http.get(f"{base}/aa/token") as response:
            assert (response.status, await response.text()) == (400, "BAD REQUEST")
    logs = "".join((tmp_path / n).read_text() for n in ("aa.log", "cdh.log", "api.log"))
    assert "Sample Attester will be used" in logs
    for secret in (KEY1.hex(), message["token"], message["tee_keypair"].splitlines()[1]):
        assert secret not in logs
    assert not re.search(re.escape(repr(KEY1)[2:-1]), logs)


async def guest_debug(*args: str) -> tuple[int, bytes, bytes]:
    process = await asyncio.create_subprocess_exec(
        str(BIN / "guest-debug"),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stdout, stderr


async def test_debugging_cli(daemons: Daemons, kbs: LoopbackKbs) -> None:
    code, out, err = await guest_debug("token", "--aa", f"unix://{daemons.aa_socket}")
    assert code == 0, err
    claims = json.loads(out)
    assert claims["iss"] == "CoCo-Attestation-Service" and "submods" in claims
    code, out, err = await guest_debug(
        "resource", "kbs:///default/key/key1", "--cdh", f"unix://{daemons.cdh_socket}"
    )
    assert (code, out) == (0, KEY1), err
    code, out, err = await guest_debug(
        "resource", "kbs:///default/key/key1", "--kbs", kbs.url, "--tee", "sample"
    )
    assert (code, out) == (0, KEY1), err
    code, out, err = await guest_debug("attest", "--kbs", kbs.url, "--tee", "sample")
    assert code == 0, err
    assert "sample" in json.loads(out)["submods"]["cpu0"]["ear.veraison.annotated-evidence"]
    code, out, err = await guest_debug(
        "resource", "kbs:///default/../key1", "--cdh", f"unix://{daemons.cdh_socket}"
    )
    assert code == 1 and b"Get Resource failed" in err
