"""Fixtures for the local provider: TLS material as the adaptor issues it, user-data, and
providers whose address ranges and bridges are unique per test (never private ranges)."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from adaptor.tls import AgentTLS
from protocols import apf, userdata
from protocols.kata import health_pb2
from protocols.ttrpc import Client, ConnectionClosed, TTRPCError
from providers.base import NODE_TAG, SANDBOX_TAG, InstanceRequest
from providers.local.provider import LocalProvider
from providers.local.settings import LocalSettings

NODE = "node-local-test"


@pytest.fixture(scope="session")
def agent_tls() -> AgentTLS:
    """The adaptor's automatic mode: an in-process CA and a client certificate."""
    return AgentTLS()


@pytest.fixture
def state_dir() -> Iterator[Path]:
    # Short on purpose: the VM's unix sockets live below it (108-byte limit).
    path = Path(tempfile.mkdtemp(prefix="pplt-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def user_data(tls: AgentTLS, name: str, network: apf.PodNetwork | None) -> bytes:
    material = tls.server_material(name)
    config = apf.ApfConfig(
        pod_network=network, pod_namespace="default", pod_name="nginx",
        tls_server_key=material.server_key, tls_server_cert=material.server_cert,
        tls_client_ca=material.client_ca,
    )
    files = [userdata.WriteFile(userdata.APF_JSON_PATH, apf.dumps(config))]
    return userdata.render(files).encode()


def request(tls: AgentTLS, network: apf.PodNetwork | None = None) -> InstanceRequest:
    sid = secrets.token_hex(32)
    name = f"podvm-nginx-{sid[:8]}"
    return InstanceRequest(
        name=name, sandbox_id=sid, pod_name="nginx", pod_namespace="default",
        user_data=user_data(tls, name, network),
        tags={NODE_TAG: NODE, SANDBOX_TAG: sid},
    )


@dataclass
class LocalSetup:
    provider: LocalProvider
    settings: LocalSettings


def _ip_quiet(*args: str) -> None:
    subprocess.run(["ip", *args], capture_output=True, check=False)


@pytest.fixture
async def netns_provider(state_dir: Path) -> AsyncIterator[LocalSetup]:
    """Namespaces on; subnet in 198.18.0.0/15 (benchmarking range), a per-test bridge."""
    tag = secrets.token_hex(3)
    settings = LocalSettings(
        subnet=f"198.18.{int(tag[:2], 16)}.0/24", bridge=f"pptb{tag}",
        state_dir=str(state_dir), netns="on",
    )
    provider = LocalProvider(settings, node_name=NODE)
    yield LocalSetup(provider, settings)
    for instance in await provider.list_instances({}):
        await provider.delete_instance(instance.id)
    await provider.aclose()
    _ip_quiet("link", "delete", "dev", settings.bridge)


@pytest.fixture
async def loopback_provider(state_dir: Path) -> AsyncIterator[LocalSetup]:
    """No namespaces: a random 127.x.y.0/24 range and a non-default forwarder port."""
    a, b = secrets.randbelow(250) + 1, secrets.randbelow(250) + 1
    settings = LocalSettings(
        loopback_subnet=f"127.{a}.{b}.0/24", state_dir=str(state_dir), netns="off",
        forwarder_port=20000 + secrets.randbelow(20000),
    )
    provider = LocalProvider(settings, node_name=NODE)
    yield LocalSetup(provider, settings)
    for instance in await provider.list_instances({}):
        await provider.delete_instance(instance.id)
    await provider.aclose()


async def dial_forwarder(
    host: str, port: int, tls: AgentTLS, server_name: str, timeout: float = 40.0
) -> Client:
    """Dial the forwarder until it answers Health/Check, as the adaptor's proxy does."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Exception | None = None
    while loop.time() < deadline:
        try:
            client = await Client.connect_tcp(host, port, ssl=tls.client_context(),
                                              server_hostname=server_name)
        except OSError as exc:
            last = exc
            await asyncio.sleep(0.2)
            continue
        try:
            await client.call("grpc.Health", "Check", health_pb2.CheckRequest(),
                              health_pb2.HealthCheckResponse, timeout=10)
        except (TTRPCError, ConnectionClosed) as exc:
            last = exc
            await client.aclose()
            await asyncio.sleep(0.2)
            continue
        return client
    raise AssertionError(f"forwarder at {host}:{port} did not answer in {timeout}s: {last!r}")


def vm_log(state: Path, instance_id: str) -> str:
    path = state / instance_id / "vm.log"
    return path.read_text(errors="replace") if path.exists() else "(no vm.log)"


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
