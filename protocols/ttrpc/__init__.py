"""An asyncio implementation of containerd's ttrpc (unary calls), wire-compatible with the
Go and Rust implementations used by the Kata shim and kata-agent.

Standalone: imports nothing else from this project.
"""

from protocols.ttrpc.client import Client
from protocols.ttrpc.framing import (
    HEADER_LENGTH,
    MESSAGE_LENGTH_MAX,
    Flags,
    Frame,
    FrameDecoder,
    MessageType,
    OversizedFrame,
    encode_frame,
)
from protocols.ttrpc.messages import DecodeError, Request, Response, Status
from protocols.ttrpc.server import CallContext, Method, RawHandler, Server
from protocols.ttrpc.status import Code, ConnectionClosed, OversizedMessage, TTRPCError

__all__ = [
    "HEADER_LENGTH",
    "MESSAGE_LENGTH_MAX",
    "CallContext",
    "Client",
    "Code",
    "ConnectionClosed",
    "DecodeError",
    "Flags",
    "Frame",
    "FrameDecoder",
    "MessageType",
    "Method",
    "OversizedFrame",
    "OversizedMessage",
    "RawHandler",
    "Request",
    "Response",
    "Server",
    "Status",
    "TTRPCError",
    "encode_frame",
]
