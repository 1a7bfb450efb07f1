"""containerd's Go ttrpc on both ends: Go client -> forwarder (-disable-tls) -> Go server."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from forwarder.apf.daemon import Forwarder
from forwarder.apf.options import Options
from protocols.apf import ApfConfig
from tests.interop.peer import GoServer, require_peer, run_client

pytestmark = pytest.mark.interop


@pytest.fixture
async def address() -> AsyncIterator[str]:
    """tcp:HOST:PORT of a plain-TCP forwarder relaying to a Go ttrpc server ("the agent")."""
    require_peer()
    with tempfile.TemporaryDirectory(prefix="apf-interop-") as tmp:
        agent_path = str(Path(tmp) / "agent.sock")
        async with GoServer(f"unix:{agent_path}"):
            options = Options(config_path=str(Path(tmp) / "apf.json"), listen_host="127.0.0.1",
                              listen_port=0, kata_agent_socket=agent_path, disable_tls=True)
            forwarder = Forwarder(options, ApfConfig(pod_namespace="ns", pod_name="p"),
                                  environ={})
            host, port = await forwarder.start()
            try:
                yield f"tcp:{host}:{port}"
            finally:
                await forwarder.aclose(grace=1.0)


async def test_health_check_and_error_statuses_are_relayed(address: str) -> None:
    result = await run_client(address, "error")
    # grpc.Health/Check that the Go agent fails with INTERNAL comes back unchanged.
    assert result["health_status"]["code"] == 13
    assert result["health_status"]["message"] == "health failed"
    # A plain Health/Check afterwards succeeds (SERVING) on the same connection.
    assert result["after"] == {"code": 0, "message": "", "error": ""}
    # The forwarder serves only the agent's services, as upstream's does.
    assert result["status"]["code"] == 12
    assert result["status"]["message"] == "service hypervisor.Hypervisor"


async def test_metadata_reaches_the_go_agent(address: str) -> None:
    result = await run_client(address, "metadata")
    echoed = result["health_echoed"]
    assert echoed["x-peer-one"] == ["1"]
    assert echoed["x-peer-case"] == ["Mixed Value"]
    assert echoed["x-peer-multi"] == ["a", "b"]


async def test_sequential_checks_through_the_forwarder(address: str) -> None:
    result = await run_client(address, "bench", calls=300)
    assert "error" not in result
    assert result["calls"] == 300
