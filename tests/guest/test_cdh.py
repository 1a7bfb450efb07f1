"""confidential-data-hub: cdh.toml, cc_kbc through a real AA socket, offline_fs_kbc."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from guest.aa import config as aa_config
from guest.aa.agent import AttestationAgent
from guest.aa.service import AttestationAgentService
from guest.attesters.sample import SampleAttester
from guest.cdh import config as cdh_config
from guest.cdh.hub import Hub, credential_path_valid, make_kbc
from guest.cdh.kbc import OfflineFsKbc
from guest.cdh.service import CdhServices
from guest.errors import GuestConfigError, ResourceNotFound
from guest.kbs.resource_uri import ResourceUri
from protocols.kata import confidential_data_hub_pb2 as pb
from protocols.ttrpc import Client, Code, Server, TTRPCError
from protocols.ttrpc.testing import connect_pair
from tests.guest.conftest import KEY1
from tests.guest.kbs_server import LoopbackKbs


@pytest.fixture
async def aa_socket(kbs: LoopbackKbs, tmp_path: Path) -> AsyncIterator[Path]:
    agent = AttestationAgent(
        aa_config.parse(f'[token_configs.kbs]\nurl = "{kbs.url}"\n'), SampleAttester()
    )
    server = Server()
    AttestationAgentService(agent).register(server)
    path = tmp_path / "aa.sock"
    await server.start_unix(str(path))
    try:
        yield path
    finally:
        await server.shutdown()
        await agent.aclose()


@pytest.fixture
async def hub(kbs: LoopbackKbs, aa_socket: Path) -> AsyncIterator[Hub]:
    config = cdh_config.parse(
        f'[kbc]\nname = "cc_kbc"\nurl = "{kbs.url}"\n[aa]\naa_socket = "unix://{aa_socket}"\n'
    )
    hub = Hub(config, make_kbc(config, {}))
    try:
        yield hub
    finally:
        await hub.aclose()


@pytest.fixture
async def cdh(hub: Hub) -> AsyncIterator[Client]:
    server = Server()
    CdhServices(hub).register(server)
    client = await connect_pair(server)
    try:
        yield client
    finally:
        await client.aclose()
        await server.shutdown()


async def test_get_resource_over_ttrpc(cdh: Client, kbs: LoopbackKbs) -> None:
    reply = await cdh.call(
        "api.GetResourceService",
        "GetResource",
        pb.GetResourceRequest(ResourcePath="kbs:///default/key/key1"),
        pb.GetResourceResponse,
    )
    assert reply.Resource == KEY1
    for bad in ("kbs:///default/../key1", "kbs:///default/key/missing", "file:///etc/passwd"):
        with pytest.raises(TTRPCError) as raised:
            await cdh.call(
                "api.GetResourceService",
                "GetResource",
                pb.GetResourceRequest(ResourcePath=bad),
                pb.GetResourceResponse,
            )
        assert (raised.value.code, raised.value.message) == (
            Code.INTERNAL,
            "[CDH] [ERROR]: Get Resource failed",
        )
    with pytest.raises(TTRPCError) as raised:
        await cdh.call(
            "api.ImagePullService",
            "PullImage",
            pb.ImagePullRequest(image_url="x", bundle_path="/b"),
            pb.ImagePullResponse,
        )
    assert raised.value.code == Code.UNIMPLEMENTED and "Image Pull" in raised.value.message


async def test_cc_kbc_gets_a_new_token_on_401(hub: Hub, kbs: LoopbackKbs) -> None:
    assert await hub.get_resource("kbs:///default/key/key1") == KEY1
    (token,) = {s.token for s in kbs.state.sessions.values()}
    assert token is not None
    kbs.state.revoked.add(token)
    # the AA hands out its cached (now refused) token first; after the 401 the CDH asks
    # for a renewed one, and the AA attests again
    assert await hub.get_resource("kbs:///default/key/key1") == KEY1
    assert kbs.state.attest_count == 2
    assert kbs.state.resource_count == 3


async def test_credentials_are_fetched_at_startup(
    kbs: LoopbackKbs, aa_socket: Path, tmp_path: Path
) -> None:
    base = tmp_path / "cdh/kbs"
    target = base / "key/key1"
    config = cdh_config.parse(
        f'[kbc]\nname = "cc_kbc"\nurl = "{kbs.url}"\n[aa]\naa_socket = "unix://{aa_socket}"\n'
        f'[[credentials]]\nresource_uri = "kbs:///default/key/key1"\npath = "{target}"\n'
    )
    hub = Hub(config, make_kbc(config, {}))
    try:
        await hub.init_credentials(base)
    finally:
        await hub.aclose()
    assert target.read_bytes() == KEY1
    assert target.stat().st_mode & 0o777 == 0o600


async def test_credential_paths_must_stay_in_the_storage_dir(tmp_path: Path) -> None:
    base = Path("/run/confidential-containers/cdh/kbs")
    assert credential_path_valid(f"{base}/kms-credential/config.toml")
    assert not credential_path_valid("/etc/config.toml")
    assert not credential_path_valid(f"{base}/../../config.toml")
    assert not credential_path_valid(f"{base}/kms-credential/./config.toml")
    config = cdh_config.parse(
        '[kbc]\nname = "offline_fs_kbc"\n'
        '[[credentials]]\nresource_uri = "kbs:///a/b/c"\npath = "/etc/shadow"\n'
    )
    hub = Hub(config, OfflineFsKbc({}))
    with pytest.raises(GuestConfigError, match="illegal path to put credential"):
        await hub.init_credentials()


async def test_offline_fs_kbc(tmp_path: Path) -> None:
    resources = tmp_path / "resources.json"
    resources.write_text(json.dumps({"default/key/key1": base64.b64encode(KEY1).decode()}))
    kbc = OfflineFsKbc.load([tmp_path / "absent.json", resources])
    assert await kbc.get_resource(ResourceUri.parse("kbs:///default/key/key1")) == KEY1
    with pytest.raises(ResourceNotFound):
        await kbc.get_resource(ResourceUri.parse("kbs:///default/key/other"))


def test_cdh_toml_keys_and_fallbacks() -> None:
    config = cdh_config.parse(
        'socket = "unix:///tmp/cdh.sock"\nskip_sealed_secret_verification = true\n'
        '[aa]\naa_socket = "unix:///tmp/aa.sock"\n'
        '[kbc]\nname = "cc_kbc"\nurl = "http://1.2.3.4:8080"\nkbs_cert = "PEM"\n'
        '[[credentials]]\nresource_uri = "kbs:///a/b/c"\npath = "/run/x"\n'
        '[image]\nwork_dir = "/x"\n'
    )
    assert config.kbc == cdh_config.KbcConfig("cc_kbc", "http://1.2.3.4:8080", "PEM")
    assert (config.socket, config.aa_socket) == ("unix:///tmp/cdh.sock", "unix:///tmp/aa.sock")
    assert config.credentials == (cdh_config.Credential("kbs:///a/b/c", "/run/x"),)
    assert config.skip_sealed_secret_verification
    defaults = cdh_config.parse('[kbc]\nname = "offline_fs_kbc"\n')
    assert defaults.socket == "unix:///run/confidential-containers/cdh.sock"
    assert defaults.aa_socket == (
        "unix:///run/confidential-containers/attestation-agent/attestation-agent.sock"
    )
    with pytest.raises(GuestConfigError, match="name is required"):
        cdh_config.parse("")
    with pytest.raises(GuestConfigError, match="unsupported kbc"):
        cdh_config.parse('[kbc]\nname = "sample_kbc"\n')
    from_env = cdh_config.from_kernel_cmdline({"AA_KBC_PARAMS": "cc_kbc::http://k:80"}, "")
    assert from_env.kbc == cdh_config.KbcConfig("cc_kbc", "http://k:80")
    # neither (the dummy initdata has no cdh.toml): upstream's default, so the CDH starts
    default = cdh_config.from_kernel_cmdline({}, "quiet")
    assert default.kbc == cdh_config.KbcConfig("offline_fs_kbc", "")
    with pytest.raises(GuestConfigError, match="not <kbc>::<url>"):
        cdh_config.from_kernel_cmdline({"AA_KBC_PARAMS": "cc_kbc"}, "")
