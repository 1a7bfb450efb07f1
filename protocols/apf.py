"""The ``apf.json`` schema: the forwarder's configuration and the pod-network tunnel config.

The adaptor renders this file into the pod VM's user-data at ``/run/peerpod/apf.json``; the
agent-protocol-forwarder reads it at startup. Keys, their order and which ones are omitted
when empty follow upstream's Go structs (``forwarder.Config`` and ``tunneler.Config``), so a
file written here is byte-for-byte what upstream's ``json.MarshalIndent(cfg, "", "    ")``
writes, and a file written by upstream parses here.

Go encoding details kept on purpose:

* ``pod-network``, ``pod-namespace``, ``pod-name`` and every ``pod-network`` key are always
  written (``routes`` and ``neighbors`` are ``null`` when empty, as a nil Go slice is);
  ``vxlan-port`` and ``vxlan-id`` are omitted when 0.
* A route's ``dst`` and ``gw`` are always written (``""`` when unset); ``dev`` is omitted when
  empty; ``protocol`` and ``scope`` are omitted at their zero value (unspecified protocol,
  ``universe`` scope).
* A neighbour's ``ip`` is always written; ``hw-addr``, ``dev`` and ``state`` are omitted
  when empty (``none`` is the zero state).
* ``<``, ``>``, ``&``, U+2028 and U+2029 are escaped as ``\\u003c`` etc., like Go's encoder.

Unknown keys (for example the removed secure-comms ``sc-pp-prv``/``sc-wn-pub``) are ignored,
as Go ignores them. Malformed values raise :class:`ApfError` naming the key.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from runtime.errors import FormatError

__all__ = [
    "NEIGHBOR_STATES",
    "ROUTE_PROTOCOLS",
    "ROUTE_SCOPES",
    "ApfConfig",
    "ApfError",
    "Neighbor",
    "PodNetwork",
    "Route",
    "dumps",
    "loads",
]

# Strings upstream accepts when parsing (netops lookup tables).
ROUTE_PROTOCOLS = frozenset({"static", "boot", "dhcp", "kernel"})
ROUTE_SCOPES = frozenset({"universe", "site", "link", "host", "nowhere"})
NEIGHBOR_STATES = frozenset(
    {"none", "incomplete", "reachable", "stale", "delay", "probe", "failed", "noarp", "permanent"}
)

_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_MAX_VXLAN_ID = (1 << 24) - 1


class ApfError(FormatError):
    """``apf.json`` could not be parsed; ``key`` is the dotted path of the offending key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"apf.json: {key}: {problem}" if key else f"apf.json: {problem}")
        self.key = key
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Route:
    """One pod route. ``dst`` is a CIDR, or ``""`` for a default route as upstream writes it."""

    dst: str
    gw: str = ""
    dev: str = ""
    protocol: str = ""  # static | boot | dhcp | kernel, "" = unspecified
    scope: str = ""  # universe | site | link | host | nowhere, "" = universe


@dataclass(frozen=True, slots=True)
class Neighbor:
    """A permanent neighbour entry of the pod interface (JSON keys ip, hw-addr, dev, state)."""

    ip: str
    hw_addr: str
    dev: str = ""
    state: str = ""


@dataclass(frozen=True, slots=True)
class PodNetwork:
    """The pod's network as read on the worker, and the tunnel that carries it (``pod-network``)."""

    tunnel_type: str = "vxlan"  # "none" = no tunnel
    pod_ip: str = ""  # CIDR, e.g. 10.244.1.21/24
    pod_hw_addr: str = ""
    interface: str = ""
    worker_node_ip: str = ""  # CIDR of the worker's tunnel interface
    routes: tuple[Route, ...] = ()
    neighbors: tuple[Neighbor, ...] = ()
    mtu: int = 0
    index: int = 0
    vxlan_port: int = 0
    vxlan_id: int = 0
    dedicated: bool = False
    external_net_via_pod_vm: bool = False


@dataclass(frozen=True, slots=True)
class ApfConfig:
    """The whole ``apf.json``: pod network, pod identity and the VM's TLS material."""

    pod_network: PodNetwork | None = None
    pod_namespace: str = ""
    pod_name: str = ""
    tls_server_key: str = ""
    tls_server_cert: str = ""
    tls_client_ca: str = ""
    tls_min_version: str = ""
    tls_cipher_suites: tuple[str, ...] = ()


# --------------------------------------------------------------------------- encoding


def _route_json(route: Route) -> dict[str, Any]:
    out: dict[str, Any] = {"dst": route.dst, "gw": route.gw}
    if route.dev:
        out["dev"] = route.dev
    if route.protocol:
        out["protocol"] = route.protocol
    if route.scope and route.scope != "universe":
        out["scope"] = route.scope
    return out


def _neighbor_json(neighbor: Neighbor) -> dict[str, Any]:
    out: dict[str, Any] = {"ip": neighbor.ip}
    if neighbor.hw_addr:
        out["hw-addr"] = neighbor.hw_addr
    if neighbor.dev:
        out["dev"] = neighbor.dev
    if neighbor.state and neighbor.state != "none":
        out["state"] = neighbor.state
    return out


def _pod_network_json(net: PodNetwork) -> dict[str, Any]:
    out: dict[str, Any] = {
        "podip": net.pod_ip,
        "pod-hw-addr": net.pod_hw_addr,
        "interface": net.interface,
        "worker-node-ip": net.worker_node_ip,
        "tunnel-type": net.tunnel_type,
        "routes": [_route_json(r) for r in net.routes] if net.routes else None,
        "neighbors": [_neighbor_json(n) for n in net.neighbors] if net.neighbors else None,
        "mtu": net.mtu,
        "index": net.index,
    }
    if net.vxlan_port:
        out["vxlan-port"] = net.vxlan_port
    if net.vxlan_id:
        out["vxlan-id"] = net.vxlan_id
    out["dedicated"] = net.dedicated
    out["external-net-via-pod-vm"] = net.external_net_via_pod_vm
    return out


def to_json_object(config: ApfConfig) -> dict[str, Any]:
    """The JSON object (key order as upstream) that :func:`dumps` serialises."""
    out: dict[str, Any] = {
        "pod-network": _pod_network_json(config.pod_network) if config.pod_network else None,
        "pod-namespace": config.pod_namespace,
        "pod-name": config.pod_name,
    }
    optional = (
        ("tls-server-key", config.tls_server_key),
        ("tls-server-cert", config.tls_server_cert),
        ("tls-client-ca", config.tls_client_ca),
        ("tls-min-version", config.tls_min_version),
    )
    for key, value in optional:
        if value:
            out[key] = value
    if config.tls_cipher_suites:
        out["tls-cipher-suites"] = list(config.tls_cipher_suites)
    return out


_GO_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
_GO_ESCAPE_RE = re.compile("[<>&\u2028\u2029]")


def dumps(config: ApfConfig) -> str:
    """Serialise like Go's ``json.MarshalIndent(config, "", "    ")`` (no trailing newline)."""
    text = json.dumps(to_json_object(config), indent=4, ensure_ascii=False)
    # These characters can only occur inside JSON strings, so a plain substitution is safe.
    return _GO_ESCAPE_RE.sub(lambda m: _GO_ESCAPES[m.group(0)], text)


# --------------------------------------------------------------------------- decoding

T = TypeVar("T")


def _get(obj: Mapping[str, Any], key: str, path: str, kind: type[T], default: T) -> T:
    """``obj[key]`` checked against ``kind``; JSON null or a missing key gives ``default``."""
    value = obj.get(key)
    if value is None:
        return default
    # bool is a subclass of int in Python but not a JSON number.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ApfError(f"{path}{key}", f"expected {_kind_name(kind)}, got {_json_type(value)}")
    return value


def _kind_name(kind: type) -> str:
    return {
        str: "a string",
        int: "an integer",
        bool: "a boolean",
        list: "an array",
        dict: "an object",
    }.get(kind, kind.__name__)


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return f"boolean {json.dumps(value)}"
    if isinstance(value, int | float):
        return f"number {value!r}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _check(key: str, value: str, validator: Callable[[str], object], what: str) -> str:
    if value:
        try:
            validator(value)
        except ValueError:
            raise ApfError(key, f"invalid {what} {value!r}") from None
    return value


def _cidr(value: str) -> object:
    if "/" not in value:
        raise ValueError(value)
    return ipaddress.ip_interface(value)


def _mac(value: str) -> object:
    if not _MAC_RE.match(value):
        raise ValueError(value)
    return value


def _one_of(allowed: frozenset[str]) -> Callable[[str], object]:
    def check(value: str) -> object:
        if value not in allowed:
            raise ValueError(value)
        return value

    return check


def _range(path: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise ApfError(path, f"{value} is out of range {low}..{high}")
    return value


def _objects(obj: Mapping[str, Any], key: str, path: str) -> list[Mapping[str, Any]]:
    items = _get(obj, key, path, list, [])
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ApfError(f"{path}{key}[{i}]", f"expected an object, got {_json_type(item)}")
    return items


def _route(obj: Mapping[str, Any], path: str) -> Route:
    return Route(
        dst=_check(path + "dst", _get(obj, "dst", path, str, ""), _cidr, "CIDR"),
        gw=_check(path + "gw", _get(obj, "gw", path, str, ""), ipaddress.ip_address, "address"),
        dev=_get(obj, "dev", path, str, ""),
        protocol=_check(
            path + "protocol",
            _get(obj, "protocol", path, str, ""),
            _one_of(ROUTE_PROTOCOLS),
            f"route protocol (one of {', '.join(sorted(ROUTE_PROTOCOLS))})",
        ),
        scope=_check(
            path + "scope",
            _get(obj, "scope", path, str, ""),
            _one_of(ROUTE_SCOPES),
            f"route scope (one of {', '.join(sorted(ROUTE_SCOPES))})",
        ),
    )


def _neighbor(obj: Mapping[str, Any], path: str) -> Neighbor:
    return Neighbor(
        ip=_check(path + "ip", _get(obj, "ip", path, str, ""), ipaddress.ip_address, "address"),
        hw_addr=_check(path + "hw-addr", _get(obj, "hw-addr", path, str, ""), _mac, "MAC"),
        dev=_get(obj, "dev", path, str, ""),
        state=_check(
            path + "state",
            _get(obj, "state", path, str, ""),
            _one_of(NEIGHBOR_STATES),
            "neighbor state",
        ),
    )


def _pod_network(obj: Mapping[str, Any]) -> PodNetwork:
    p = "pod-network."
    routes = tuple(_route(r, f"{p}routes[{i}].") for i, r in enumerate(_objects(obj, "routes", p)))
    neighbors = tuple(
        _neighbor(n, f"{p}neighbors[{i}].") for i, n in enumerate(_objects(obj, "neighbors", p))
    )
    return PodNetwork(
        tunnel_type=_get(obj, "tunnel-type", p, str, ""),
        pod_ip=_check(p + "podip", _get(obj, "podip", p, str, ""), _cidr, "CIDR"),
        pod_hw_addr=_check(p + "pod-hw-addr", _get(obj, "pod-hw-addr", p, str, ""), _mac, "MAC"),
        interface=_get(obj, "interface", p, str, ""),
        worker_node_ip=_check(
            p + "worker-node-ip", _get(obj, "worker-node-ip", p, str, ""), _cidr, "CIDR"
        ),
        routes=routes,
        neighbors=neighbors,
        mtu=_range(p + "mtu", _get(obj, "mtu", p, int, 0), 0, 65535),
        index=_get(obj, "index", p, int, 0),
        vxlan_port=_range(p + "vxlan-port", _get(obj, "vxlan-port", p, int, 0), 0, 65535),
        vxlan_id=_range(p + "vxlan-id", _get(obj, "vxlan-id", p, int, 0), 0, _MAX_VXLAN_ID),
        dedicated=_get(obj, "dedicated", p, bool, False),
        external_net_via_pod_vm=_get(obj, "external-net-via-pod-vm", p, bool, False),
    )


def from_json_object(obj: object) -> ApfConfig:
    """Build an :class:`ApfConfig` from already-decoded JSON."""
    if not isinstance(obj, dict):
        raise ApfError("", f"expected a JSON object at the top level, got {_json_type(obj)}")
    pod_network = obj.get("pod-network")
    if pod_network is not None and not isinstance(pod_network, dict):
        raise ApfError("pod-network", f"expected an object, got {_json_type(pod_network)}")
    suites = _get(obj, "tls-cipher-suites", "", list, [])
    for i, suite in enumerate(suites):
        if not isinstance(suite, str):
            raise ApfError(f"tls-cipher-suites[{i}]", f"expected a string, got {_json_type(suite)}")
    return ApfConfig(
        pod_network=_pod_network(pod_network) if pod_network is not None else None,
        pod_namespace=_get(obj, "pod-namespace", "", str, ""),
        pod_name=_get(obj, "pod-name", "", str, ""),
        tls_server_key=_get(obj, "tls-server-key", "", str, ""),
        tls_server_cert=_get(obj, "tls-server-cert", "", str, ""),
        tls_client_ca=_get(obj, "tls-client-ca", "", str, ""),
        tls_min_version=_get(obj, "tls-min-version", "", str, ""),
        tls_cipher_suites=tuple(suites),
    )


def loads(text: str | bytes) -> ApfConfig:
    """Parse ``apf.json``. Raises :class:`ApfError` (a ``ValueError``) naming the bad key."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ApfError("", f"not valid JSON: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ApfError("", f"not UTF-8: {exc}") from None
    return from_json_object(obj)
