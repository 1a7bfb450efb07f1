"""The adaptor's error tree. The ttrpc service maps each class to a status code."""

from __future__ import annotations

from runtime.errors import PeerPodsError


class AdaptorError(PeerPodsError):
    """Base of the errors the adaptor reports to the Kata shim."""


class InvalidRequest(AdaptorError):
    """The request or its annotations are invalid (INVALID_ARGUMENT)."""


class InstanceTypeError(InvalidRequest):
    """No usable instance type for the requested resources (upstream's wording)."""


class SandboxExists(AdaptorError):
    """A different CreateVM for a sandbox id that is already known (ALREADY_EXISTS)."""

    def __init__(self, sandbox_id: str) -> None:
        super().__init__(f"sandbox {sandbox_id} already exists")
        self.sandbox_id = sandbox_id


class SandboxNotFound(AdaptorError):
    """The sandbox id is unknown (NOT_FOUND)."""

    def __init__(self, sandbox_id: str, prefix: str = "") -> None:
        text = f"sandbox {sandbox_id} does not exist"
        super().__init__(f"{prefix}: {text}" if prefix else text)
        self.sandbox_id = sandbox_id


class StartFailed(AdaptorError):
    """StartVM failed after the instance was requested (the instance has been cleaned up)."""


class ForwarderUnreachable(StartFailed):
    """The pod VM's forwarder did not answer within the proxy timeout (DEADLINE_EXCEEDED)."""


class StopFailed(AdaptorError):
    """StopVM could not delete the instance; the sandbox record is kept for a later retry."""


class IllegalTransition(AdaptorError):
    """A sandbox step its state does not allow (a bug in the adaptor, never the caller's)."""
