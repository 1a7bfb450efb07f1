"""The CDH ttrpc services of package ``api``, with upstream's statuses."""

from __future__ import annotations

import logging

from guest.cdh.hub import Hub
from guest.cdh.sealed import SealedSecrets
from guest.cdh.secure_mount import SecureMounter
from guest.errors import GuestError
from protocols.kata import confidential_data_hub_pb2 as pb
from protocols.ttrpc import CallContext, Code, Method, Server, TTRPCError

log = logging.getLogger(__name__)


def _internal(what: str) -> TTRPCError:
    return TTRPCError(Code.INTERNAL, f"[CDH] [ERROR]: {what}")


class CdhServices:
    def __init__(
        self,
        hub: Hub,
        sealed: SealedSecrets | None = None,
        mounter: SecureMounter | None = None,
    ) -> None:
        self.hub = hub
        self.sealed = sealed or SealedSecrets(
            hub.get_resource, skip_verification=hub.config.skip_sealed_secret_verification
        )
        self.mounter = mounter or SecureMounter(hub.get_resource, self.sealed.unseal)

    async def get_resource(
        self, request: pb.GetResourceRequest, ctx: CallContext
    ) -> pb.GetResourceResponse:
        try:
            resource = await self.hub.get_resource(request.ResourcePath)
        except GuestError as exc:
            log.error("[ttRPC CDH] GetResource %s: %s", request.ResourcePath, exc)
            raise _internal("Get Resource failed") from exc
        return pb.GetResourceResponse(Resource=resource)

    async def unseal_secret(
        self, request: pb.UnsealSecretInput, ctx: CallContext
    ) -> pb.UnsealSecretOutput:
        try:
            plaintext = await self.sealed.unseal(request.secret)
        except GuestError as exc:
            log.error("[ttRPC CDH] UnsealSecret: %s", exc)
            raise _internal("Unseal Secret failed") from exc
        return pb.UnsealSecretOutput(plaintext=plaintext)

    async def secure_mount(
        self, request: pb.SecureMountRequest, ctx: CallContext
    ) -> pb.SecureMountResponse:
        try:
            await self.mounter.secure_mount(
                request.volume_type,
                dict(request.options),
                list(request.flags),
                request.mount_point,
            )
        except (GuestError, OSError) as exc:
            log.error("[ttRPC CDH] SecureMount %s: %s", request.mount_point, exc)
            raise _internal("Secure Mount failed") from exc
        return pb.SecureMountResponse()

    async def pull_image(
        self, request: pb.ImagePullRequest, ctx: CallContext
    ) -> pb.ImagePullResponse:
        raise TTRPCError(
            Code.UNIMPLEMENTED,
            "[CDH] [ERROR]: Image Pull error: image pulling in the CDH is not implemented; "
            "let kata-agent pull the image",
        )

    def register(self, server: Server) -> None:
        server.register_service(
            "api.GetResourceService",
            {
                "GetResource": Method(
                    self.get_resource, pb.GetResourceRequest, pb.GetResourceResponse
                )
            },
        )
        server.register_service(
            "api.SealedSecretService",
            {
                "UnsealSecret": Method(
                    self.unseal_secret, pb.UnsealSecretInput, pb.UnsealSecretOutput
                )
            },
        )
        server.register_service(
            "api.SecureMountService",
            {
                "SecureMount": Method(
                    self.secure_mount, pb.SecureMountRequest, pb.SecureMountResponse
                )
            },
        )
        server.register_service(
            "api.ImagePullService",
            {"PullImage": Method(self.pull_image, pb.ImagePullRequest, pb.ImagePullResponse)},
        )
