"""``attestation_agent.AttestationAgentService`` over ttrpc, with upstream's statuses."""

from __future__ import annotations

import logging

from guest.aa.agent import AttestationAgent
from guest.ttrpc_service import failing_as, register
from protocols.kata import attestation_agent_pb2 as pb
from protocols.ttrpc import CallContext, Code, Server, TTRPCError

log = logging.getLogger(__name__)

SERVICE = "attestation_agent.AttestationAgentService"
AGENT_NAME = "attestation-agent"
# ttrpc metadata a GetToken caller sets when the KBS refused the token it got before; the
# agent then attests again instead of answering from its cache (upstream always attests)
TOKEN_RENEW_METADATA = "token-renew"


def _internal(what: str) -> TTRPCError:
    return TTRPCError(Code.INTERNAL, f"[ERROR:{AGENT_NAME}] {what}")


class AttestationAgentService:
    def __init__(self, agent: AttestationAgent) -> None:
        self.agent = agent

    async def get_evidence(
        self, request: pb.GetEvidenceRequest, ctx: CallContext
    ) -> pb.GetEvidenceResponse:
        with failing_as(
            _internal("AA-KBC get evidence failed"), log, "AA (ttrpc): get evidence failed"
        ):
            evidence = await self.agent.get_evidence(request.RuntimeData)
        return pb.GetEvidenceResponse(Evidence=evidence)

    async def get_additional_evidence(
        self, request: pb.GetAdditionalEvidenceRequest, ctx: CallContext
    ) -> pb.GetEvidenceResponse:
        with failing_as(
            _internal("AA-KBC get evidence failed"), log, "AA (ttrpc): get evidence failed"
        ):
            evidence = await self.agent.get_additional_evidence(request.RuntimeData)
        return pb.GetEvidenceResponse(Evidence=evidence)

    async def get_token(self, request: pb.GetTokenRequest, ctx: CallContext) -> pb.GetTokenResponse:
        renew = ctx.metadata_value(TOKEN_RENEW_METADATA) == "1"
        with failing_as(_internal("AA-KBC get token failed"), log, "AA (ttrpc): get token failed"):
            token = await self.agent.get_token(request.TokenType, renew=renew)
        return pb.GetTokenResponse(Token=token)

    async def extend_runtime_measurement(
        self, request: pb.ExtendRuntimeMeasurementRequest, ctx: CallContext
    ) -> pb.ExtendRuntimeMeasurementResponse:
        index = request.RegisterIndex if request.HasField("RegisterIndex") else None
        failed = _internal("AA extend runtime measurement failed")
        with failing_as(failed, log, "AA (ttrpc): extend runtime measurement failed"):
            result = await self.agent.extend_runtime_measurement(
                request.Domain, request.Operation, request.Content, index
            )
        return pb.ExtendRuntimeMeasurementResponse(Result=result)  # type: ignore[arg-type]

    async def bind_init_data(
        self, request: pb.BindInitDataRequest, ctx: CallContext
    ) -> pb.BindInitDataResponse:
        # upstream's ttrpc build does not implement it (only the gRPC build does)
        raise TTRPCError(Code.NOT_FOUND, f"/{SERVICE}/BindInitData is not supported")

    async def get_tee_type(
        self, request: pb.GetTeeTypeRequest, ctx: CallContext
    ) -> pb.GetTeeTypeResponse:
        return pb.GetTeeTypeResponse(tee=self.agent.tee)

    async def get_additional_tees(
        self, request: pb.GetAdditionalTeesRequest, ctx: CallContext
    ) -> pb.GetAdditionalTeesResponse:
        return pb.GetAdditionalTeesResponse(additional_tees=self.agent.additional_tees())

    def register(self, server: Server) -> None:
        register(
            server,
            [
                (SERVICE, "GetEvidence", self.get_evidence, pb.GetEvidenceRequest,
                 pb.GetEvidenceResponse),
                (SERVICE, "GetAdditionalEvidence", self.get_additional_evidence,
                 pb.GetAdditionalEvidenceRequest, pb.GetEvidenceResponse),
                (SERVICE, "GetToken", self.get_token, pb.GetTokenRequest, pb.GetTokenResponse),
                (SERVICE, "ExtendRuntimeMeasurement", self.extend_runtime_measurement,
                 pb.ExtendRuntimeMeasurementRequest, pb.ExtendRuntimeMeasurementResponse),
                (SERVICE, "BindInitData", self.bind_init_data, pb.BindInitDataRequest,
                 pb.BindInitDataResponse),
                (SERVICE, "GetTeeType", self.get_tee_type, pb.GetTeeTypeRequest,
                 pb.GetTeeTypeResponse),
                (SERVICE, "GetAdditionalTees", self.get_additional_tees,
                 pb.GetAdditionalTeesRequest, pb.GetAdditionalTeesResponse),
            ],
        )  # fmt: skip
