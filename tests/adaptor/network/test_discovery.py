"""Choosing the pod address among the pod interface's addresses (pure, no namespaces)."""

from __future__ import annotations

from ipaddress import ip_interface

import pytest

from adaptor.network.discovery import pod_address
from podnetwork.errors import PodNetworkError

V4 = ip_interface("10.244.1.21/24")
V6 = ip_interface("fd00:10:244:1::21/64")
LINK_LOCAL = ip_interface("fe80::858:aff:fef4:115/64")


def test_ipv4_wins_and_the_global_ipv6_is_reported_unused() -> None:
    assert pod_address([V4, V6, LINK_LOCAL], "eth0", "/run/netns/p") == (V4, (V6,))


def test_ipv6_only_pod_uses_its_global_address() -> None:
    assert pod_address([LINK_LOCAL, V6], "eth0", "/run/netns/p") == (V6, ())


@pytest.mark.parametrize(
    ("addrs", "found"),
    [([LINK_LOCAL], "found 0: none"),
     ([V6, ip_interface("2001:db8::5/64")], "found 2: fd00:10:244:1::21/64, 2001:db8::5/64"),
     ([], "found 0: none")],
)  # fmt: skip
def test_no_usable_address_is_refused(addrs: list, found: str) -> None:
    with pytest.raises(PodNetworkError) as info:
        pod_address(addrs, "eth0", "/run/netns/p")
    text = str(info.value)
    assert text.startswith("pod interface eth0 in network namespace /run/netns/p must have")
    assert f"exactly one global IPv6 address, {found}" in text


def test_two_ipv4_addresses_are_refused_as_upstream() -> None:
    with pytest.raises(PodNetworkError, match="exactly one IPv4 address, found 2"):
        pod_address([V4, ip_interface("10.244.1.77/24"), V6], "eth0", "/run/netns/p")
