"""api-server-rest routes: statuses and bodies as upstream, and the traversal guard."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from unittest import mock

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from guest.api_server.backends import BackendError
from guest.api_server.router import Router, decode_runtime_data


class FakeCdh:
    def __init__(self) -> None:
        self.asked: list[str] = []

    async def get_resource(self, uri: str) -> bytes:
        self.asked.append(uri)
        if uri.endswith("/broken"):
            raise BackendError("CDH ttrpc error: [CDH] [ERROR]: Get Resource failed")
        return b"bytes of " + uri.encode()

    async def aclose(self) -> None: ...


class FakeAa:
    async def get_token(self, token_type: str) -> bytes:
        return b'{"token":"t","tee_keypair":"k"}'

    async def get_evidence(self, data: bytes) -> bytes:
        return b"evidence:" + data

    async def get_additional_evidence(self, data: bytes) -> bytes:
        return b""

    async def extend_runtime_measurement(self, domain: str, operation: str, content: str) -> int:
        return 2

    async def get_tee_type(self) -> str:
        return "sample"

    async def get_additional_tees(self) -> list[str]:
        return []


async def raw_get(
    port: int, target: str, method: str = "GET", body: bytes = b""
) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    data = await reader.read()
    writer.close()
    head, _, payload = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), payload


@pytest.fixture
async def server(request: pytest.FixtureRequest) -> AsyncIterator[tuple[int, FakeCdh]]:
    feature = getattr(request, "param", "all")
    cdh = FakeCdh()
    aa: Any = FakeAa() if feature in ("attestation", "all") else None
    router = Router(aa, cdh if feature in ("resource", "all") else None, feature)  # type: ignore[arg-type]
    runner = web.AppRunner(router.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1], cdh
    finally:
        await runner.cleanup()


async def test_resource_routes(server: tuple[int, FakeCdh]) -> None:
    port, cdh = server
    assert await raw_get(port, "/cdh/resource/default/key/key1") == (
        200,
        b"bytes of kbs:///default/key/key1",
    )
    for bad in (
        "/cdh/resource/default/../key1",
        "/cdh/resource/default/key/..",
        "/cdh/resource/default/key",
        "/cdh/resource/a/b/c/d",
        "/cdh/resource/a//c",
        "/cdh/resource/default/./key1",
    ):
        assert (await raw_get(port, bad))[0] == 400, bad
    assert await raw_get(port, "/cdh/resource/default/key/broken") == (
        500,
        b"CDH ttrpc error: [CDH] [ERROR]: Get Resource failed",
    )
    assert await raw_get(port, "/cdh/other/a/b/c") == (404, b"URL NOT FOUND")
    assert await raw_get(port, "/nothing") == (404, b"URL NOT FOUND")
    assert cdh.asked == ["kbs:///default/key/key1", "kbs:///default/key/broken"]


async def test_aa_routes(server: tuple[int, FakeCdh]) -> None:
    port, _ = server
    assert await raw_get(port, "/aa/token?token_type=kbs") == (
        200,
        b'{"token":"t","tee_keypair":"k"}',
    )
    assert await raw_get(port, "/aa/token") == (400, b"BAD REQUEST")
    assert await raw_get(port, "/aa/evidence?runtime_data=abc") == (200, b"evidence:abc")
    assert await raw_get(port, "/aa/evidence?runtime_data=cmVwb3J0&encoding=base64") == (
        200,
        b"evidence:report",
    )
    assert await raw_get(port, "/aa/evidence?runtime_data=x&encoding=hex") == (400, b"BAD REQUEST")
    assert await raw_get(port, "/aa/additional-evidence?runtime_data=x") == (200, b"")
    aael = b'{"domain":"d","operation":"o","content":"c"}'
    assert await raw_get(port, "/aa/aael", "POST", aael) == (
        200,
        b'{"success":"false","message": "Attestation Agent does not enable eventlog recording"}',
    )
    assert (await raw_get(port, "/aa/aael", "POST", b"{"))[0] == 500
    assert await raw_get(port, "/aa/aael") == (404, b"URL NOT FOUND")
    assert await raw_get(port, "/info", "POST") == (405, b"Method Not Allowed")
    status, body = await raw_get(port, "/info")
    assert status == 200 and b'"tee": "sample"' in body and b'"feature": "all"' in body


@pytest.mark.parametrize("server", ["resource"], indirect=True)
async def test_features_not_enabled(server: tuple[int, FakeCdh]) -> None:
    port, _ = server
    assert await raw_get(port, "/aa/token?token_type=kbs") == (
        404,
        b"Attestation Feature Not Enabled",
    )
    status, body = await raw_get(port, "/info")
    assert status == 200 and b"tee" not in body


@pytest.mark.parametrize("server", ["attestation"], indirect=True)
async def test_resource_feature_not_enabled(server: tuple[int, FakeCdh]) -> None:
    port, _ = server
    assert await raw_get(port, "/cdh/resource/a/b/c") == (404, b"Resource Feature Not Enabled")


async def test_non_loopback_peer_is_forbidden() -> None:
    router = Router(None, FakeCdh(), "resource")  # type: ignore[arg-type]
    transport = mock.Mock()
    transport.get_extra_info.return_value = ("10.1.2.3", 40000)
    request = make_mocked_request("GET", "/cdh/resource/a/b/c", transport=transport)
    response = await router.route(request)
    assert (response.status, response.body) == (403, b"Forbidden")
    transport.get_extra_info.return_value = ("::1", 40000, 0, 0)
    request = make_mocked_request("GET", "/cdh/resource/a/b/c", transport=transport)
    assert (await router.route(request)).status == 200


def test_decode_runtime_data() -> None:
    assert decode_runtime_data("hello", None) == b"hello"
    assert decode_runtime_data("cmVwb3J0", "base64") == b"report"
    with pytest.raises(ValueError):
        decode_runtime_data("data", "hex")
