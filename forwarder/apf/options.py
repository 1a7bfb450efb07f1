"""Command line of agent-protocol-forwarder, with upstream's flag names and defaults.

Flags are read by :mod:`runtime.settings`, Go style (``-listen 0.0.0.0:15150``,
``-listen=...``, boolean ``-disable-tls`` or ``-disable-tls=false``); the GNU spelling
``--listen`` is accepted too. Like upstream, the flags have no environment variables; the
two cloud-volume disk detection knobs are environment variables only, as upstream reads them
(``CAA_DISK_DETECT_MAX_ATTEMPTS``: a positive integer, ``CAA_DISK_DETECT_RETRY_DELAY``: a
positive Go duration; anything else is ignored with a warning and the default kept).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import ClassVar

from runtime.errors import UsageError
from runtime.settings import SettingsError, build, flags_of, parse_duration, scan, setting
from runtime.settings import usage as usage_text
from runtime.values import IgnoredEnvValue

DEFAULT_CONFIG_PATH = "/run/peerpod/apf.json"
DEFAULT_LISTEN_ADDR = "0.0.0.0:15150"
DEFAULT_KATA_AGENT_SOCKET = "/run/kata-containers/agent.sock"
DEFAULT_POD_NAMESPACE = "/run/netns/podns"

PROGRAM_NAME = "agent-protocol-forwarder"
DEFAULT_DISK_DETECT_ATTEMPTS = 15
DEFAULT_DISK_DETECT_DELAY = timedelta(seconds=2)


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
    disk_detect_attempts: int = DEFAULT_DISK_DETECT_ATTEMPTS
    disk_detect_delay: float = DEFAULT_DISK_DETECT_DELAY.total_seconds()

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


def _positive_int(text: str) -> int:
    """Upstream's ``strconv.Atoi`` and ``n > 0``; anything else keeps the default."""
    try:
        value = int(text.strip())
    except ValueError:
        raise IgnoredEnvValue(f"invalid integer {text!r}") from None
    if value <= 0:
        raise IgnoredEnvValue(f"{value} is not positive")
    return value


def _positive_duration(text: str) -> timedelta:
    """Upstream's ``time.ParseDuration`` and ``d > 0``; anything else keeps the default."""
    try:
        value = parse_duration(text)
    except SettingsError as exc:
        raise IgnoredEnvValue(str(exc)) from None
    if value <= timedelta(0):
        raise IgnoredEnvValue(f"{text!r} is not positive")
    return value


@dataclass(frozen=True)
class ForwarderFlags:
    """The command line as declared (upstream's names, help and defaults; no env vars)."""

    TITLE: ClassVar[str] = f"Usage of {PROGRAM_NAME}"

    version: bool = setting(flag="version", default=False, help="Show version")
    config: str = setting(flag="config", default=DEFAULT_CONFIG_PATH,
                          help="Path to a daemon config file")
    listen: str = setting(flag="listen", default=DEFAULT_LISTEN_ADDR, help="Listen address")
    kata_agent_socket: str = setting(flag="kata-agent-socket", default=DEFAULT_KATA_AGENT_SOCKET,
                                     help="Path to a kata agent socket")
    pod_namespace: str = setting(flag="pod-namespace", default=DEFAULT_POD_NAMESPACE,
                                 help="Path to the network namespace where the pod runs")
    host_interface: str = setting(
        flag="host-interface", default="",
        help="network interface name that is used for network tunnel traffic")
    ca_cert_file: str = setting(flag="ca-cert-file", default="", help="CA cert file")
    cert_file: str = setting(flag="cert-file", default="", help="cert file")
    cert_key: str = setting(flag="cert-key", default="", help="cert key")
    tls_skip_verify: bool = setting(
        flag="tls-skip-verify", default=False,
        help="Skip TLS certificate verification - use it only for testing")
    disable_tls: bool = setting(
        flag="disable-tls", default=False,
        help="Disable TLS encryption - use it only for testing (without it the forwarder "
        "refuses to start unless mutual TLS is configured)")
    disk_detect_attempts: int = setting(
        env="CAA_DISK_DETECT_MAX_ATTEMPTS", default=DEFAULT_DISK_DETECT_ATTEMPTS,
        parse=_positive_int,
        help="how many times CreateContainer looks for a cloud volume's block device")
    disk_detect_delay: timedelta = setting(
        env="CAA_DISK_DETECT_RETRY_DELAY", default=DEFAULT_DISK_DETECT_DELAY,
        parse=_positive_duration,
        help="pause between two looks for a cloud volume's block device")


def usage() -> str:
    return usage_text(flags_of(ForwarderFlags), ForwarderFlags.TITLE)


def parse_options(
    argv: Sequence[str], env: Mapping[str, str] | None = None
) -> tuple[Options, bool]:
    """Parse ``argv`` (without the program name) and the environment's disk detection
    settings. Returns (options, help_requested)."""
    try:
        parsed = scan(argv, flags_of(ForwarderFlags))
        flags = build(ForwarderFlags, parsed, env or {})
    except SettingsError as exc:
        raise UsageError(str(exc)) from None
    if parsed.help:
        return Options(), True
    host, port = parse_listen_addr(flags.listen)
    options = Options(
        config_path=flags.config,
        listen_host=host,
        listen_port=port,
        kata_agent_socket=flags.kata_agent_socket,
        pod_namespace=flags.pod_namespace,
        host_interface=flags.host_interface or None,
        ca_cert_file=flags.ca_cert_file or None,
        cert_file=flags.cert_file or None,
        cert_key=flags.cert_key or None,
        tls_skip_verify=flags.tls_skip_verify,
        disable_tls=flags.disable_tls,
        show_version=flags.version,
        disk_detect_attempts=flags.disk_detect_attempts,
        disk_detect_delay=flags.disk_detect_delay.total_seconds(),
    )
    return options, False
