"""Settings of the ``local`` provider (project-specific knobs; upstream has no such provider).

Address ranges:

* With network namespaces (root), each pod VM gets an address from ``LOCAL_SUBNET``
  (default ``192.168.251.0/24``). That range lives only on the provider's bridge
  (``LOCAL_BRIDGE``, default ``ppbr0``): the bridge holds the first host address and is the
  VMs' default gateway. Pick another range if your networks already use this one.
* Without namespaces (not root, or ``LOCAL_NETNS=off``), each pod VM is a set of processes
  listening on its own loopback address from ``LOCAL_LOOPBACK_SUBNET`` (default
  ``127.0.0.0/24``, first host skipped). There is no pod network then, so the adaptor must
  run with ``TUNNEL_TYPE=none``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from runtime.settings import setting

DEFAULT_SUBNET = "192.168.251.0/24"
DEFAULT_LOOPBACK_SUBNET = "127.0.0.0/24"
DEFAULT_BRIDGE = "ppbr0"
DEFAULT_STATE_DIR = "/run/peerpod/local"
DEFAULT_FORWARDER_PORT = 15150
NETNS_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class LocalSettings:
    TITLE: ClassVar[str] = "local provider"

    agent_command: str = setting(
        env="LOCAL_AGENT_COMMAND", flag="local-agent-command", default="",
        help="command line started in each pod VM before the forwarder; {socket} is replaced "
        "by the VM's agent socket path (also in $KATA_AGENT_SOCKET); empty = the project's "
        "development stand-in for kata-agent",
    )
    subnet: str = setting(
        env="LOCAL_SUBNET", flag="local-subnet", default=DEFAULT_SUBNET,
        help="private IPv4 range of the pod VMs, present only on the provider's bridge",
    )
    loopback_subnet: str = setting(
        env="LOCAL_LOOPBACK_SUBNET", flag="local-loopback-subnet",
        default=DEFAULT_LOOPBACK_SUBNET,
        help="loopback range of the pod VMs when network namespaces are not used",
    )
    bridge: str = setting(
        env="LOCAL_BRIDGE", flag="local-bridge", default=DEFAULT_BRIDGE,
        help="bridge the pod VMs' veth pairs attach to (created on first use)",
    )
    state_dir: str = setting(
        env="LOCAL_STATE_DIR", flag="local-state-dir", default=DEFAULT_STATE_DIR,
        help="directory holding one subdirectory per pod VM",
    )
    netns: str = setting(
        env="LOCAL_NETNS", flag="local-netns", default="auto",
        help="run each pod VM in its own network namespace: auto (when root), on, off",
    )
    forwarder_port: int = setting(
        env="LOCAL_FORWARDER_PORT", flag="local-forwarder-port",
        default=DEFAULT_FORWARDER_PORT,
        help="port agent-protocol-forwarder listens on in each pod VM (the adaptor's "
        "FORWARDER_PORT)",
    )
    process_user_data: str = setting(
        env="LOCAL_PROCESS_USER_DATA", flag="local-process-user-data", default="",
        help="process-user-data executable (empty = next to the Python interpreter)",
    )
    forwarder: str = setting(
        env="LOCAL_FORWARDER", flag="local-forwarder", default="",
        help="agent-protocol-forwarder executable (empty = next to the Python interpreter)",
    )
