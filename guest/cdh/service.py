"""The CDH ttrpc services of package ``api``, with upstream's statuses."""

from __future__ import annotations

import logging

from guest.cdh.hub import Hub
from guest.cdh.sealed import SealedSecrets
from guest.cdh.secure_mount import SecureMounter
from guest.errors import GuestError
from guest.ttrpc_service import failing_as, register
from protocols.kata import confidential_data_hub_pb2 as pb
from protocols.ttrpc import CallContext, Code, Server, TTRPCError

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
        path = request.ResourcePath
        with failing_as(_internal("Get Resource failed"), log, "[ttRPC CDH] GetResource %s", path):
            resource = await self.hub.get_resource(path)
        return pb.GetResourceResponse(Resource=resource)

    async def unseal_secret(
        self, request: pb.UnsealSecretInput, ctx: CallContext
    ) -> pb.UnsealSecretOutput:
        with failing_as(_internal("Unseal Secret failed"), log, "[ttRPC CDH] UnsealSecret"):
            plaintext = await self.sealed.unseal(request.secret)
        return pb.UnsealSecretOutput(plaintext=plaintext)

    async def secure_mount(
        self, request: pb.SecureMountRequest, ctx: CallContext
    ) -> pb.SecureMountResponse:
        failed = _internal("Secure Mount failed")
        line = "[ttRPC CDH] SecureMount %s"
        with failing_as(failed, log, line, request.mount_point, catch=(GuestError, OSError)):
            await self.mounter.secure_mount(
                request.volume_type,
                dict(request.options),
                list(request.flags),
                request.mount_point,
            )
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
        register(
            server,
            [
                ("api.GetResourceService", "GetResource", self.get_resource,
                 pb.GetResourceRequest, pb.GetResourceResponse),
                ("api.SealedSecretService", "UnsealSecret", self.unseal_secret,
                 pb.UnsealSecretInput, pb.UnsealSecretOutput),
                ("api.SecureMountService", "SecureMount", self.secure_mount,
                 pb.SecureMountRequest, pb.SecureMountResponse),
                ("api.ImagePullService", "PullImage", self.pull_image, pb.ImagePullRequest,
                 pb.ImagePullResponse),
            ],
        )  # fmt: skip
