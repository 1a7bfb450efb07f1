"""Forwarder lifecycle: pod network setup/teardown order, failures, sd_notify."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from forwarder.apf.daemon import Forwarder, PodNetworkHandle, StartupError
from forwarder.apf.options import Options
from protocols.apf import ApfConfig, PodNetwork, loads
from tests.forwarder.apf.helpers import FakeAgent, Pki


class Network:
    """Records the calls a pod network receives."""

    def __init__(self, fail_setup: bool = False) -> None:
        self.events: list[str] = []
        self.fail_setup = fail_setup

    async def setup(self, network: PodNetwork, options: Options) -> PodNetworkHandle:
        self.events.append(f"setup {network.tunnel_type} {options.pod_namespace}")
        if self.fail_setup:
            raise RuntimeError("no primary interface after 180s")
        return self

    async def teardown(self) -> None:
        self.events.append("teardown")


def config(pki: Pki) -> ApfConfig:
    return loads(pki.apf_json(**{"pod-network": {"tunnel-type": "vxlan", "vxlan-id": 555001}}))


def options(agent: FakeAgent, port: int = 0) -> Options:
    return Options(listen_host="127.0.0.1", listen_port=port, kata_agent_socket=agent.path,
                   pod_namespace="/run/netns/podns-x")


async def test_network_is_set_up_before_listening_and_torn_down_last(
    pki: Pki, agent: FakeAgent, tmp_path: Path
) -> None:
    net = Network()
    notify_path = str(tmp_path / "n.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sink:
        sink.bind(notify_path)
        sink.settimeout(5)
        fwd = Forwarder(options(agent), config(pki), network_setup=net.setup,
                        environ={"NOTIFY_SOCKET": notify_path})
        host, port = await fwd.start()
        assert net.events == ["setup vxlan /run/netns/podns-x"]
        assert sink.recv(4096).decode() == f"READY=1\nSTATUS=serving on {host}:{port}"
        await fwd.aclose(grace=0.5)
        assert sink.recv(4096) == b"STOPPING=1"
    assert net.events == ["setup vxlan /run/netns/podns-x", "teardown"]
    with pytest.raises(OSError):  # no longer listening
        socket.create_connection((host, port), timeout=2).close()


async def test_network_failure_is_a_startup_error(pki: Pki, agent: FakeAgent) -> None:
    net = Network(fail_setup=True)
    fwd = Forwarder(options(agent), config(pki), network_setup=net.setup, environ={})
    with pytest.raises(StartupError, match="failed to set up pod network: no primary interface"):
        await fwd.start()


async def test_listen_failure_tears_the_network_down(pki: Pki, agent: FakeAgent) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        net = Network()
        fwd = Forwarder(options(agent, taken.getsockname()[1]), config(pki),
                        network_setup=net.setup, environ={})
        with pytest.raises(StartupError, match=r"failed to listen on 127\.0\.0\.1:"):
            await fwd.start()
    assert net.events == ["setup vxlan /run/netns/podns-x", "teardown"]


async def test_tls_error_comes_before_any_network_change(agent: FakeAgent) -> None:
    net = Network()
    fwd = Forwarder(options(agent), ApfConfig(pod_network=PodNetwork()), network_setup=net.setup,
                    environ={})
    with pytest.raises(StartupError, match="no server certificate"):
        await fwd.start()
    assert net.events == []


async def test_real_pod_network_with_tunnel_none(pki: Pki, agent: FakeAgent) -> None:
    cfg = loads(pki.apf_json(**{"pod-network": {"tunnel-type": "none"}}))
    fwd = Forwarder(options(agent), cfg, environ={})
    await fwd.start()
    await fwd.aclose(grace=0)
