"""Missing settings filled from the worker's IMDS, served by a loopback IMDSv2 server."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from providers.aws.imds import lookup_defaults, parse_public_keys
from tests.providers.aws.conftest import ProviderFactory, World, make_request
from tests.providers.aws.ec2proxy import Ec2Proxy
from tests.providers.aws.motoserver import REGION

MAC = "0e:49:61:0f:c3:11"
TOKEN = "AQAEAFakeToken=="


@dataclass
class Imds:
    values: dict[str, str]
    require_token: bool = True
    refuse_tokens: bool = False
    url: str = ""
    seen: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append(f"{request.method} {request.path}")
        if request.path == "/latest/api/token":
            if request.method != "PUT" or self.refuse_tokens:
                return web.Response(status=403)
            if "X-aws-ec2-metadata-token-ttl-seconds" not in request.headers:
                return web.Response(status=400)
            return web.Response(text=TOKEN)
        if self.require_token and request.headers.get("X-aws-ec2-metadata-token") != TOKEN:
            return web.Response(status=401)
        prefix = "/latest/meta-data/"
        key = request.path[len(prefix):] if request.path.startswith(prefix) else None
        if key is None or key not in self.values:
            return web.Response(status=404)
        return web.Response(text=self.values[key])


async def serve(imds: Imds) -> web.AppRunner:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", imds.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    imds.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    await web.SockSite(runner, sock).start()
    return runner


@pytest.fixture
async def imds(world: World) -> AsyncIterator[Imds]:
    server = Imds(values={
        "mac": MAC,
        f"network/interfaces/macs/{MAC}/subnet-id": world.subnet_id,
        f"network/interfaces/macs/{MAC}/security-group-ids": f"{world.security_group_id}\n",
        "placement/region": REGION,
        "public-keys": "0=worker-key",
    })
    runner = await serve(server)
    try:
        yield server
    finally:
        await runner.cleanup()


async def test_provider_fills_missing_settings_from_imdsv2(
    make_provider: ProviderFactory, proxy: Ec2Proxy, imds: Imds, world: World, node: str
) -> None:
    provider = make_provider(region="", subnet_id="", security_group_ids=(), key_name="",
                             imds_url=imds.url)
    await provider.create_instance(make_request(node))
    (run,) = proxy.calls("RunInstances")
    assert run.params["SubnetId"] == world.subnet_id
    assert run.params["SecurityGroupId.1"] == world.security_group_id
    assert run.params["KeyName"] == "worker-key"
    assert imds.seen[0] == "PUT /latest/api/token"


async def test_configured_values_win_over_imds(
    make_provider: ProviderFactory, proxy: Ec2Proxy, imds: Imds, node: str
) -> None:
    provider = make_provider(key_name="", imds_url=imds.url)
    await provider.create_instance(make_request(node))
    (run,) = proxy.calls("RunInstances")
    assert run.params["KeyName"] == "worker-key"
    assert not any("subnet-id" in seen or "security-group-ids" in seen for seen in imds.seen)
    assert "GET /latest/meta-data/placement/region" not in imds.seen


async def test_imdsv1_fallback_when_tokens_are_refused(imds: Imds, world: World) -> None:
    imds.refuse_tokens = True
    imds.require_token = False
    found = await lookup_defaults(imds.url, need_region=True, need_subnet=True,
                                  need_key=True, need_security_groups=True)
    assert found.region == REGION
    assert found.subnet_id == world.subnet_id
    assert found.security_group_ids == (world.security_group_id,)
    assert found.key_name == "worker-key"


async def test_unreachable_imds_leaves_values_empty() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    found = await lookup_defaults(f"http://127.0.0.1:{port}", need_region=True,
                                  need_subnet=True, need_key=True, need_security_groups=True)
    assert (found.region, found.subnet_id, found.key_name, found.security_group_ids) == (
        "", "", "", ())


def test_parse_public_keys() -> None:
    assert parse_public_keys("0=my-key\n1=other") == "my-key"
    assert parse_public_keys("1=other\n0=mine") == "mine"
    assert parse_public_keys("") == ""
    assert parse_public_keys("garbage") == ""
