"""apf.json: upstream's example parses, dumps matches Go's MarshalIndent, errors name the key."""

from __future__ import annotations

import json

import pytest

from protocols.apf import ApfConfig, ApfError, Neighbor, PodNetwork, Route, dumps, loads

# The apf.json heredoc of upstream's podvm/hack/smoke_test.sh (written before the
# external-net-via-pod-vm key existed).
SMOKE_TEST_APF = """{
    "pod-network": {
        "podip": "10.244.1.21/24",
        "pod-hw-addr": "32:b9:59:6b:f0:d5",
        "interface": "eth0",
        "worker-node-ip": "10.224.0.5/16",
        "tunnel-type": "vxlan",
        "routes": [
            {
                "dst": "0.0.0.0/0",
                "gw": "10.244.1.1",
                "dev": "eth0",
                "protocol": "boot"
            },
            {
                "dst": "10.244.1.0/24",
                "gw": "",
                "dev": "eth0",
                "protocol": "kernel",
                "scope": "link"
            }
        ],
        "neighbors": null,
        "mtu": 1500,
        "index": 2,
        "vxlan-port": 8472,
        "vxlan-id": 555002,
        "dedicated": false
    },
    "pod-namespace": "default",
    "pod-name": "smoketest"
}"""


def test_smoke_test_example_parses() -> None:
    config = loads(SMOKE_TEST_APF)
    assert config == ApfConfig(
        pod_network=PodNetwork(
            tunnel_type="vxlan",
            pod_ip="10.244.1.21/24",
            pod_hw_addr="32:b9:59:6b:f0:d5",
            interface="eth0",
            worker_node_ip="10.224.0.5/16",
            routes=(
                Route(dst="0.0.0.0/0", gw="10.244.1.1", dev="eth0", protocol="boot"),
                Route(dst="10.244.1.0/24", dev="eth0", protocol="kernel", scope="link"),
            ),
            neighbors=(),
            mtu=1500,
            index=2,
            vxlan_port=8472,
            vxlan_id=555002,
        ),
        pod_namespace="default",
        pod_name="smoketest",
    )


def test_dumps_is_byte_identical_to_go_marshal_indent() -> None:
    # Today's Go struct has one more key than the heredoc; everything else is identical.
    expected = SMOKE_TEST_APF.replace(
        '"dedicated": false\n',
        '"dedicated": false,\n        "external-net-via-pod-vm": false\n',
    )
    assert dumps(loads(SMOKE_TEST_APF)) == expected


def test_omitempty_and_null_rules() -> None:
    text = dumps(ApfConfig(pod_network=PodNetwork(tunnel_type="none")))
    obj = json.loads(text)
    assert list(obj) == ["pod-network", "pod-namespace", "pod-name"]
    net = obj["pod-network"]
    assert net["routes"] is None and net["neighbors"] is None
    assert "vxlan-port" not in net and "vxlan-id" not in net
    assert net["dedicated"] is False and net["external-net-via-pod-vm"] is False
    assert json.loads(dumps(ApfConfig()))["pod-network"] is None


def test_route_and_neighbor_zero_values_are_omitted() -> None:
    net = PodNetwork(
        routes=(Route(dst="", scope="universe"),),
        neighbors=(
            Neighbor(ip="10.0.0.1", hw_addr=""),
            Neighbor("10.0.0.2", "aa:bb:cc:dd:ee:ff", "eth0", "permanent"),
        ),
    )
    obj = json.loads(dumps(ApfConfig(pod_network=net)))["pod-network"]
    assert obj["routes"] == [{"dst": "", "gw": ""}]
    assert obj["neighbors"] == [
        {"ip": "10.0.0.1"},
        {"ip": "10.0.0.2", "hw-addr": "aa:bb:cc:dd:ee:ff", "dev": "eth0", "state": "permanent"},
    ]


def test_tls_fields_round_trip_and_html_escaping() -> None:
    config = ApfConfig(
        pod_network=None,
        pod_namespace="ns",
        pod_name="p",
        tls_server_key="-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n",
        tls_server_cert="cert <&>",
        tls_client_ca="ca",
        tls_min_version="VersionTLS13",
        tls_cipher_suites=("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384"),
    )
    text = dumps(config)
    assert '"tls-server-cert": "cert \\u003c\\u0026\\u003e"' in text
    keys = list(json.loads(text))
    assert keys == [
        "pod-network",
        "pod-namespace",
        "pod-name",
        "tls-server-key",
        "tls-server-cert",
        "tls-client-ca",
        "tls-min-version",
        "tls-cipher-suites",
    ]
    assert loads(text) == config


def test_full_round_trip() -> None:
    config = ApfConfig(
        pod_network=PodNetwork(
            pod_ip="fd00::5/64",
            pod_hw_addr="02:00:00:00:00:01",
            interface="eth0",
            worker_node_ip="192.0.2.1/24",
            routes=(Route(dst="", gw="fd00::1", dev="eth0", protocol="static", scope="site"),),
            neighbors=(Neighbor("169.254.1.1", "ee:ee:ee:ee:ee:ee", "eth0", "permanent"),),
            mtu=1450,
            index=7,
            vxlan_port=4789,
            vxlan_id=555001,
            dedicated=True,
            external_net_via_pod_vm=True,
        ),
        pod_namespace="default",
        pod_name="nginx",
    )
    assert loads(dumps(config)) == config
    assert loads(dumps(config).encode()) == config


def test_unknown_keys_are_ignored() -> None:
    assert loads('{"pod-name": "x", "sc-pp-prv": "AAAA", "future": 1}') == ApfConfig(pod_name="x")


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ("[]", "", "top level"),
        ("{", "", "not valid JSON"),
        ('{"pod-network": 3}', "pod-network", "expected an object"),
        ('{"pod-name": 1}', "pod-name", "expected a string"),
        ('{"pod-network": {"podip": "10.0.0.1"}}', "pod-network.podip", "invalid CIDR"),
        ('{"pod-network": {"podip": "nonsense/8"}}', "pod-network.podip", "invalid CIDR"),
        (
            '{"pod-network": {"worker-node-ip": "1.2.3.4/99"}}',
            "pod-network.worker-node-ip",
            "invalid CIDR",
        ),
        ('{"pod-network": {"pod-hw-addr": "zz"}}', "pod-network.pod-hw-addr", "invalid MAC"),
        ('{"pod-network": {"mtu": "1500"}}', "pod-network.mtu", "expected an integer"),
        ('{"pod-network": {"mtu": true}}', "pod-network.mtu", "expected an integer"),
        ('{"pod-network": {"vxlan-id": 16777216}}', "pod-network.vxlan-id", "out of range"),
        ('{"pod-network": {"vxlan-port": -1}}', "pod-network.vxlan-port", "out of range"),
        ('{"pod-network": {"dedicated": "yes"}}', "pod-network.dedicated", "expected a boolean"),
        ('{"pod-network": {"routes": {}}}', "pod-network.routes", "expected an array"),
        ('{"pod-network": {"routes": [1]}}', "pod-network.routes[0]", "expected an object"),
        (
            '{"pod-network": {"routes": [{"dst": "", "gw": "x"}]}}',
            "pod-network.routes[0].gw",
            "invalid address",
        ),
        (
            '{"pod-network": {"routes": [{}, {"protocol": "ra"}]}}',
            "pod-network.routes[1].protocol",
            "route protocol",
        ),
        (
            '{"pod-network": {"routes": [{"scope": "global"}]}}',
            "pod-network.routes[0].scope",
            "route scope",
        ),
        (
            '{"pod-network": {"neighbors": [{"ip": "1.2.3.4", "state": "odd"}]}}',
            "pod-network.neighbors[0].state",
            "neighbor state",
        ),
        ('{"tls-cipher-suites": ["a", 2]}', "tls-cipher-suites[1]", "expected a string"),
    ],
)
def test_bad_input_names_the_key(text: str, key: str, fragment: str) -> None:
    with pytest.raises(ApfError) as info:
        loads(text)
    assert info.value.key == key
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)
