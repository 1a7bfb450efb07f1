"""ttrpc services on the hypervisor socket: ``hypervisor.Hypervisor`` and
``podvminfo.PodVMInfo``. Errors are translated here, in one table, into ttrpc statuses."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from adaptor.errors import (
    AdaptorError,
    ForwarderUnreachable,
    InvalidRequest,
    SandboxExists,
    SandboxNotFound,
    StartFailed,
    StopFailed,
)
from adaptor.manager import SandboxManager
from adaptor.metrics import Metrics
from protocols.kata import hypervisor_pb2, podvminfo_pb2
from protocols.ttrpc import CallContext, Code, Method, Server, TTRPCError
from providers.base import (
    ConfigError,
    InstanceNotFound,
    InvalidSpec,
    ProviderError,
    ProviderUnavailable,
    QuotaExceeded,
    Throttled,
)
from runtime.errors import PeerPodsError

log = logging.getLogger(__name__)

HYPERVISOR_SERVICE = "hypervisor.Hypervisor"
PODVMINFO_SERVICE = "podvminfo.PodVMInfo"
VERSION = "0.0.0"

# Most specific first; the first matching class decides the code. The last row covers the
# rest of the project's tree (runtime.errors), such as a pod network that cannot be built.
ERROR_CODES: tuple[tuple[type[BaseException], Code], ...] = (
    (SandboxNotFound, Code.NOT_FOUND),
    (SandboxExists, Code.ALREADY_EXISTS),
    (InvalidRequest, Code.INVALID_ARGUMENT),
    (ForwarderUnreachable, Code.DEADLINE_EXCEEDED),
    (StopFailed, Code.UNAVAILABLE),
    (QuotaExceeded, Code.RESOURCE_EXHAUSTED),
    (Throttled, Code.UNAVAILABLE),
    (ProviderUnavailable, Code.UNAVAILABLE),
    (InvalidSpec, Code.INVALID_ARGUMENT),
    (ConfigError, Code.FAILED_PRECONDITION),
    (InstanceNotFound, Code.NOT_FOUND),
    (ProviderError, Code.UNKNOWN),
    (StartFailed, Code.UNKNOWN),
    (AdaptorError, Code.UNKNOWN),
    (PeerPodsError, Code.UNKNOWN),
)


def status_code(exc: BaseException) -> Code:
    # A StartFailed that wraps a provider error takes the provider error's code.
    cause = exc.__cause__
    if isinstance(exc, StartFailed) and isinstance(cause, ProviderError):
        exc = cause
    for cls, code in ERROR_CODES:
        if isinstance(exc, cls):
            return code
    return Code.UNKNOWN


T = TypeVar("T")


def _code_name(code: int) -> str:
    try:
        return Code(code).name.lower()
    except ValueError:
        return f"code_{code}"


async def _translate(what: str, sandbox: str, call: Callable[[], Awaitable[T]]) -> T:
    try:
        return await call()
    except (TTRPCError, asyncio.CancelledError):
        raise
    except (AdaptorError, ProviderError) as exc:
        code = status_code(exc)
        log.warning("sandbox=%s: %s failed (%s): %s", sandbox or "-", what, code.name, exc)
        raise TTRPCError(code, str(exc)) from exc
    except Exception as exc:
        log.exception("sandbox=%s: %s failed unexpectedly", sandbox or "-", what)
        raise TTRPCError(Code.UNKNOWN, f"{what}: {type(exc).__name__}: {exc}") from exc


class HypervisorService:
    def __init__(self, manager: SandboxManager, metrics: Metrics | None = None) -> None:
        self._manager = manager
        self._metrics = metrics

    async def _timed(self, what: str, sandbox: str, call: Callable[[], Awaitable[T]]) -> T:
        """:func:`_translate`, observed in the request latency histogram."""
        if self._metrics is None:
            return await _translate(what, sandbox, call)
        started = time.monotonic()
        result = "ok"
        try:
            return await _translate(what, sandbox, call)
        except TTRPCError as exc:
            result = _code_name(exc.code)
            raise
        except asyncio.CancelledError:
            result = "cancelled"
            raise
        finally:
            self._metrics.hypervisor_latency.labels(what, result).observe(
                time.monotonic() - started
            )

    async def create_vm(
        self, request: hypervisor_pb2.CreateVMRequest, ctx: CallContext
    ) -> hypervisor_pb2.CreateVMResponse:
        path = await self._timed(
            "CreateVM",
            request.id,
            lambda: self._manager.create(
                request.id, dict(request.annotations), request.networkNamespacePath
            ),
        )
        return hypervisor_pb2.CreateVMResponse(agentSocketPath=path)

    async def start_vm(
        self, request: hypervisor_pb2.StartVMRequest, ctx: CallContext
    ) -> hypervisor_pb2.StartVMResponse:
        await self._timed("StartVM", request.id, lambda: self._manager.start(request.id))
        return hypervisor_pb2.StartVMResponse()

    async def stop_vm(
        self, request: hypervisor_pb2.StopVMRequest, ctx: CallContext
    ) -> hypervisor_pb2.StopVMResponse:
        await self._timed("StopVM", request.id, lambda: self._manager.stop(request.id))
        return hypervisor_pb2.StopVMResponse()

    async def version(
        self, request: hypervisor_pb2.VersionRequest, ctx: CallContext
    ) -> hypervisor_pb2.VersionResponse:
        return hypervisor_pb2.VersionResponse(version=VERSION)

    async def get_info(
        self, request: podvminfo_pb2.GetInfoRequest, ctx: CallContext
    ) -> podvminfo_pb2.GetInfoResponse:
        ns, name = request.PodNamespace, request.PodName
        try:
            vmid = await self._manager.instance_id(ns, name, request.Wait, ctx.remaining())
        except TimeoutError:
            raise TTRPCError(
                Code.DEADLINE_EXCEEDED,
                f"getting VM ID for {ns}:{name}: getting instance ID: context deadline exceeded",
            ) from None
        if not vmid:
            raise TTRPCError(Code.NOT_FOUND, f"VM ID for {ns}:{name} was not found")
        return podvminfo_pb2.GetInfoResponse(VMID=vmid)

    def register(self, server: Server) -> None:
        h = hypervisor_pb2
        server.register_service(
            HYPERVISOR_SERVICE,
            {
                "CreateVM": Method(self.create_vm, h.CreateVMRequest, h.CreateVMResponse),
                "StartVM": Method(self.start_vm, h.StartVMRequest, h.StartVMResponse),
                "StopVM": Method(self.stop_vm, h.StopVMRequest, h.StopVMResponse),
                "Version": Method(self.version, h.VersionRequest, h.VersionResponse),
            },
        )
        server.register_service(
            PODVMINFO_SERVICE,
            {
                "GetInfo": Method(
                    self.get_info, podvminfo_pb2.GetInfoRequest, podvminfo_pb2.GetInfoResponse
                )
            },
        )
