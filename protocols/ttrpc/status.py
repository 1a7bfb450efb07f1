"""ttrpc status codes (gRPC numbering) and the exceptions that carry them."""

from __future__ import annotations

from enum import IntEnum


class Code(IntEnum):
    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


def code_name(code: int) -> str:
    try:
        return Code(code).name
    except ValueError:
        return f"CODE({code})"


class TTRPCError(Exception):
    """A call's non-OK status: raised by handlers to answer with it, by clients on receipt.

    ``details`` holds the encoded ``google.protobuf.Any`` messages of ``google.rpc.Status``,
    passed through untouched.
    """

    def __init__(self, code: int, message: str, details: tuple[bytes, ...] = ()) -> None:
        super().__init__(f"{code_name(code)}: {message}")
        self.code = int(code)
        self.message = message
        self.details = details

    def __reduce__(self) -> tuple[type[TTRPCError], tuple[int, str, tuple[bytes, ...]]]:
        return (type(self), (self.code, self.message, self.details))


class OversizedMessage(TTRPCError):
    """A message is larger than the 4 MiB ttrpc limit."""

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(
            Code.RESOURCE_EXHAUSTED,
            f"message length {length} exceed maximum message size of {limit}",
        )
        self.length = length
        self.limit = limit

    def __reduce__(self) -> tuple[type[OversizedMessage], tuple[int, int]]:  # type: ignore[override]
        return (type(self), (self.length, self.limit))


class ConnectionClosed(Exception):
    """The connection closed before the call completed (Go: ``ttrpc: closed``)."""

    def __init__(self, message: str = "ttrpc: closed") -> None:
        super().__init__(message)
