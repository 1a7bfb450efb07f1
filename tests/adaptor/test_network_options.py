"""EXTERNAL_NETWORK_VIA_PODVM and POD_SUBNET_CIDRS at adaptor startup: where they go, and
what is refused before any pod is created."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network

import pytest

from adaptor.cli import RunCommand, parse_command
from adaptor.network.vxlan import VxlanWorkerNetwork
from adaptor.server import Daemon, StartupError, make_network
from providers import fake as fake_provider
from tests.adaptor.conftest import FAST_RETRY, make_settings
from tests.fakes.cloud import FakeCloud
from tests.fakes.network import FakeWorkerNetwork


def test_settings_use_upstreams_names() -> None:
    # Upstream: cmd/cloud-api-adaptor/main.go, BoolWithEnv "ext-network-via-podvm" /
    # EXTERNAL_NETWORK_VIA_PODVM and CustomTypeWithEnv "pod-subnet-cidrs" / POD_SUBNET_CIDRS
    # (tunneler/config.go, SubnetCIDRs.Set: comma-separated, spaces trimmed).
    env = {"EXTERNAL_NETWORK_VIA_PODVM": "true",
           "POD_SUBNET_CIDRS": "10.96.0.0/12, 10.0.0.0/8, fd00:96::/112"}
    command = parse_command(["fake"], env, lambda name: fake_provider)
    assert isinstance(command, RunCommand)
    assert command.settings.ext_network_via_podvm is True
    network = make_network(make_settings("/tmp/x", 1, tunnel_type="vxlan",
                                         pod_subnet_cidrs=command.settings.pod_subnet_cidrs,
                                         ext_network_via_podvm=True))
    assert isinstance(network, VxlanWorkerNetwork)
    # IPv6 subnets too (a pod gets those of its own address family)
    assert network.pod_subnets == (IPv4Network("10.96.0.0/12"), IPv4Network("10.0.0.0/8"),
                                   IPv6Network("fd00:96::/112"))
    assert network.external_net_via_pod_vm is True


def test_bad_pod_subnet_cidr_is_refused_at_startup() -> None:
    # Upstream: podnetwork/workernode.go, workerNode.Inspect logs and skips an unparsable
    # CIDR at every CreateVM; here the adaptor does not start.
    settings = make_settings("/tmp/x", 1, tunnel_type="vxlan", pod_subnet_cidrs=("10.96.0/12",))
    with pytest.raises(StartupError, match=r"^POD_SUBNET_CIDRS: '10.96.0/12' is not a CIDR"):
        make_network(settings)


@pytest.mark.parametrize("provider", ["azure", "gcp"])
async def test_external_network_is_refused_at_startup_where_no_second_nic(
    short_dir: str, cloud: FakeCloud, provider: str
) -> None:
    # Upstream: cloud-providers/aws/provider.go (CreateInstance, spec.MultiNic) and
    # alibabacloud attach a second NIC; azure/gcp ignore MultiNic, so their pod VMs have no
    # secondary interface and podnetwork/podnode.go only logs "failed to set up external
    # network". Refused at startup here, never at each create.
    cloud.provider.name = provider
    settings = make_settings(short_dir, cloud.port, ext_network_via_podvm=True)
    daemon = Daemon(settings, cloud.provider, network=FakeWorkerNetwork(),
                    delete_retry=FAST_RETRY)
    with pytest.raises(StartupError, match=(
        f"^EXTERNAL_NETWORK_VIA_PODVM is true, but the {provider} provider cannot give pod "
        r"VMs the second network interface it needs \(offered by: aws, libvirt, local\)")):
        await daemon.start()
    assert not daemon.started


@pytest.mark.parametrize("provider", ["aws", "libvirt", "local", "azure"])
async def test_providers_with_a_second_nic_start(
    short_dir: str, cloud: FakeCloud, provider: str
) -> None:
    cloud.provider.name = provider
    # azure starts too while the setting is off
    settings = make_settings(short_dir, cloud.port, ext_network_via_podvm=provider != "azure")
    daemon = Daemon(settings, cloud.provider, network=FakeWorkerNetwork(),
                    delete_retry=FAST_RETRY)
    try:
        await daemon.start()
        assert daemon.started
    finally:
        await daemon.aclose()
