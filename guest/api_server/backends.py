"""ttrpc clients of the AA and the CDH, as api-server-rest uses them (50 s timeout,
one cached connection re-dialled after a failure)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from protocols.kata import attestation_agent_pb2 as aa_pb
from protocols.kata import confidential_data_hub_pb2 as cdh_pb
from protocols.ttrpc import Client, ConnectionClosed, TTRPCError
from protocols.ttrpc.server import Message

TTRPC_TIMEOUT = 50.0
AA_SERVICE = "attestation_agent.AttestationAgentService"
M = TypeVar("M", bound=Message)


class BackendError(Exception):
    """A backend call failed; ``str`` is what api-server-rest answers with 500."""


class _Cached:
    def __init__(self, path: Path, name: str) -> None:
        self.path = path
        self.name = name
        self._client: Client | None = None

    async def call(self, service: str, method: str, request: Any, response_type: type[M]) -> M:
        for attempt in (1, 2):  # one re-dial when the cached connection went away
            try:
                if self._client is None or self._client.closed:
                    self._client = await Client.connect_unix(str(self.path))
                return await self._client.call(
                    service, method, request, response_type, timeout=TTRPC_TIMEOUT
                )
            except TTRPCError as exc:
                raise BackendError(f"{self.name} ttrpc error: {exc.message}") from exc
            except (OSError, ConnectionClosed, TimeoutError) as exc:
                await self.aclose()
                if attempt == 2:
                    raise BackendError(f"{self.name} is unreachable: {exc}") from exc
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


class AaBackend(_Cached):
    def __init__(self, path: Path) -> None:
        super().__init__(path, "Attestation Agent")

    async def get_token(self, token_type: str) -> bytes:
        reply = await self.call(
            AA_SERVICE,
            "GetToken",
            aa_pb.GetTokenRequest(TokenType=token_type),
            aa_pb.GetTokenResponse,
        )
        return bytes(reply.Token)

    async def get_evidence(self, runtime_data: bytes) -> bytes:
        reply = await self.call(
            AA_SERVICE,
            "GetEvidence",
            aa_pb.GetEvidenceRequest(RuntimeData=runtime_data),
            aa_pb.GetEvidenceResponse,
        )
        return bytes(reply.Evidence)

    async def get_additional_evidence(self, runtime_data: bytes) -> bytes:
        reply = await self.call(
            AA_SERVICE,
            "GetAdditionalEvidence",
            aa_pb.GetAdditionalEvidenceRequest(RuntimeData=runtime_data),
            aa_pb.GetEvidenceResponse,
        )
        return bytes(reply.Evidence)

    async def extend_runtime_measurement(self, domain: str, operation: str, content: str) -> int:
        request = aa_pb.ExtendRuntimeMeasurementRequest(
            Domain=domain, Operation=operation, Content=content
        )
        reply = await self.call(
            AA_SERVICE, "ExtendRuntimeMeasurement", request, aa_pb.ExtendRuntimeMeasurementResponse
        )
        return int(reply.Result)

    async def get_tee_type(self) -> str:
        reply = await self.call(
            AA_SERVICE, "GetTeeType", aa_pb.GetTeeTypeRequest(), aa_pb.GetTeeTypeResponse
        )
        return str(reply.tee)

    async def get_additional_tees(self) -> list[str]:
        reply = await self.call(
            AA_SERVICE,
            "GetAdditionalTees",
            aa_pb.GetAdditionalTeesRequest(),
            aa_pb.GetAdditionalTeesResponse,
        )
        return list(reply.additional_tees)


class CdhBackend(_Cached):
    def __init__(self, path: Path) -> None:
        super().__init__(path, "CDH")

    async def get_resource(self, uri: str) -> bytes:
        reply = await self.call(
            "api.GetResourceService",
            "GetResource",
            cdh_pb.GetResourceRequest(ResourcePath=uri),
            cdh_pb.GetResourceResponse,
        )
        return bytes(reply.Resource)
