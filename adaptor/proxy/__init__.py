"""The per-sandbox agent proxy: the shim's agent socket, relayed to the pod VM's forwarder."""

from adaptor.proxy.dialer import ForwarderDialer
from adaptor.proxy.proxy import AgentProxy

__all__ = ["AgentProxy", "ForwarderDialer"]
