"""Command line of agent-protocol-forwarder, with upstream's flag names and defaults.

Flags are Go style (``-listen 0.0.0.0:15150``, ``-listen=...``, boolean ``-disable-tls`` or
``-disable-tls=false``); the GNU spelling ``--listen`` is accepted too. There are no
environment variables, as upstream has none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from runtime.errors import UsageError

DEFAULT_CONFIG_PATH = "/run/peerpod/apf.json"
DEFAULT_LISTEN_ADDR = "0.0.0.0:15150"
DEFAULT_KATA_AGENT_SOCKET = "/run/kata-containers/agent.sock"
DEFAULT_POD_NAMESPACE = "/run/netns/podns"

PROGRAM_NAME = "agent-protocol-forwarder"


@dataclass(frozen=True, slots=True)
class Options:
    config_path: str = DEFAULT_CONFIG_PATH
    listen_host: str = "0.0.0.0"
    listen_port: int = 15150
    kata_agent_socket: str = DEFAULT_KATA_AGENT_SOCKET
    pod_namespace: str = DEFAULT_POD_NAMESPACE
    host_interface: str | None = None
    ca_cert_file: str | None = None
    cert_file: str | None = None
    cert_key: str | None = None
    tls_skip_verify: bool = False
    disable_tls: bool = False
    show_version: bool = False

    @property
    def listen_addr(self) -> str:
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"{host}:{self.listen_port}"


def parse_listen_addr(text: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``, ``:port`` = all addresses) -> (host, port)."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise UsageError(f"invalid listen address {text!r}: missing port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise UsageError(f"invalid listen address {text!r}: IPv6 hosts need brackets")
    try:
        port = int(port_text)
    except ValueError:
        raise UsageError(f"invalid listen address {text!r}: bad port") from None
    if not 0 <= port <= 65535:
        raise UsageError(f"invalid listen address {text!r}: port out of range")
    return host or "0.0.0.0", port


@dataclass(frozen=True, slots=True)
class _Flag:
    name: str
    help: str
    default: str | bool
    is_bool: bool = False


_FLAGS: tuple[_Flag, ...] = (
    _Flag("version", "Show version", False, is_bool=True),
    _Flag("config", "Path to a daemon config file", DEFAULT_CONFIG_PATH),
    _Flag("listen", "Listen address", DEFAULT_LISTEN_ADDR),
    _Flag("kata-agent-socket", "Path to a kata agent socket", DEFAULT_KATA_AGENT_SOCKET),
    _Flag("pod-namespace", "Path to the network namespace where the pod runs",
          DEFAULT_POD_NAMESPACE),
    _Flag("host-interface", "network interface name that is used for network tunnel traffic",
          ""),
    _Flag("ca-cert-file", "CA cert file", ""),
    _Flag("cert-file", "cert file", ""),
    _Flag("cert-key", "cert key", ""),
    _Flag("tls-skip-verify", "Skip TLS certificate verification - use it only for testing",
          False, is_bool=True),
    _Flag("disable-tls", "Disable TLS encryption - use it only for testing", False,
          is_bool=True),
)
_BY_NAME = {flag.name: flag for flag in _FLAGS}


def _flag_bool(name: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "t", "true"):
        return True
    if lowered in ("0", "f", "false"):
        return False
    raise UsageError(f"invalid boolean value {text!r} for flag -{name}")


def usage() -> str:
    lines = [f"Usage of {PROGRAM_NAME}:"]
    for flag in _FLAGS:
        kind = "" if flag.is_bool else " string"
        lines.append(f"  -{flag.name}{kind}")
        default = f' (default "{flag.default}")' if flag.default not in ("", False) else ""
        lines.append(f"    \t{flag.help}{default}")
    return "\n".join(lines) + "\n"


def _scan(argv: Sequence[str]) -> tuple[dict[str, str | bool], bool]:
    """Go ``flag`` rules: ``-name``, ``-name=value``, ``-name value``; ``--`` ends flags."""
    values: dict[str, str | bool] = {f.name: f.default for f in _FLAGS}
    args = list(argv)
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg == "--":
            break
        if len(arg) < 2 or not arg.startswith("-"):
            raise UsageError(f"unexpected argument {arg!r}")
        body = arg[2:] if arg.startswith("--") else arg[1:]
        name, has_value, value = body.partition("=")
        if name in ("h", "help"):
            return values, True
        flag = _BY_NAME.get(name)
        if not name or name.startswith("-") or flag is None:
            raise UsageError(f"flag provided but not defined: -{name}")
        if flag.is_bool:
            values[name] = _flag_bool(name, value) if has_value else True
        elif has_value:
            values[name] = value
        elif index < len(args):
            values[name] = args[index]
            index += 1
        else:
            raise UsageError(f"flag needs an argument: -{name}")
    if index < len(args):
        raise UsageError(f"unexpected argument {args[index]!r}")
    return values, False


def parse_options(argv: Sequence[str]) -> tuple[Options, bool]:
    """Parse ``argv`` (without the program name). Returns (options, help_requested)."""
    values, wants_help = _scan(argv)

    def text(name: str) -> str:
        return str(values[name])

    host, port = parse_listen_addr(text("listen"))
    options = Options(
        config_path=text("config"),
        listen_host=host,
        listen_port=port,
        kata_agent_socket=text("kata-agent-socket"),
        pod_namespace=text("pod-namespace"),
        host_interface=text("host-interface") or None,
        ca_cert_file=text("ca-cert-file") or None,
        cert_file=text("cert-file") or None,
        cert_key=text("cert-key") or None,
        tls_skip_verify=values["tls-skip-verify"] is True,
        disable_tls=values["disable-tls"] is True,
        show_version=values["version"] is True,
    )
    return options, wants_help
