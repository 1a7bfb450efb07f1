"""The GCP provider: confidential Compute Engine pod VMs through google-cloud-compute (REST).

Every SDK call runs on the provider's worker threads behind a client-side token bucket and a
retry loop (:class:`providers.kit.SdkCaller`): 429 and 403 ``rateLimitExceeded`` are retried
with backoff and full jitter until ``GCP_API_TIMEOUT`` runs out, capacity and quota errors
fail at once, and every failure leaves through :mod:`providers.gcp.errors`.

Inserts and deletes return a zone operation. The SDK's own ``result()`` polls through a client
of its own that ignores a custom endpoint, so the provider waits with ``zoneOperations.wait``
on its own client, in a loop (``wait`` may answer before the operation is done), and reads
the operation's errors itself (``wait`` does not raise for them).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from google.api_core.client_options import ClientOptions
from google.cloud import compute_v1

from providers.base import (
    SANDBOX_TAG,
    ConfigError,
    Instance,
    InstanceNotFound,
    InstanceRequest,
    InstanceTypeCatalogue,
    InstanceTypeInfo,
    InvalidSpec,
    ProviderError,
)
from providers.gcp import errors
from providers.gcp.body import (
    ALIVE_STATES,
    LABELS,
    AddressNotReady,
    carries,
    image_ref,
    insert_body,
    label_filter,
    owner_and_name,
    request_id,
    resource_manager_tags,
    source_image,
    subnetwork_path,
    to_instance,
)
from providers.gcp.credentials import make_credentials
from providers.gcp.settings import (
    BURST_SECONDS,
    READ_RATE_FACTOR,
    GcpSettings,
)
from providers.kit import BlockingCalls, SdkCaller, refuse_unsupported, translate_errors
from providers.ratelimit import TokenBucket

log = logging.getLogger(__name__)

# Calls in flight at once: as many as the HTTP connection pool of each SDK client holds
# (requests' default, 10), so that no connection is opened only to be thrown away.
CONCURRENT_CALLS = 10
PAGE_SIZE = 500
PUBLIC_IP_WAIT = 120.0
HONOURED_SPEC = ("instance_type", "vcpus", "memory_mib", "gpus", "image")
DONE = compute_v1.Operation.Status.DONE
Translate = Callable[[Exception], ProviderError]


# At DEBUG the SDK logs every request and response body (instance metadata holds the
# user-data, token requests hold signed assertions), as message extras that a JSON log
# format would print. Its loggers stay at INFO, so that those bodies are not even built.
SDK_LOGGERS = ("google.cloud.compute_v1", "google.api_core", "google.auth", "google.oauth2")


def quiet_sdk_logs() -> None:
    for name in SDK_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.INFO:
            logger.setLevel(logging.INFO)


class GcpProvider:
    name = "gcp"

    def __init__(
        self, settings: GcpSettings, *, node_name: str, poll_interval: float = 2.0
    ) -> None:
        self._settings = settings
        self._node = node_name
        self._poll_interval = poll_interval
        self._clients: dict[str, Any] = {}
        self._ready_lock = asyncio.Lock()
        self._image_sizes: dict[str, int] = {}
        self._threads = BlockingCalls(CONCURRENT_CALLS, "gce")
        self._timeout = settings.api_timeout.total_seconds()
        self._sdk = SdkCaller(self._threads, errors.classify, self._timeout)
        rate = settings.api_rate
        self._write_bucket: TokenBucket | None = None
        self._read_bucket: TokenBucket | None = None
        if rate > 0:
            self._write_bucket = TokenBucket(rate, max(1.0, rate * BURST_SECONDS))
            read_rate = rate * READ_RATE_FACTOR
            self._read_bucket = TokenBucket(read_rate, max(1.0, read_rate * BURST_SECONDS))
        if settings.resource_tags:
            log.info("TAGS: %d resource-manager tag(s) are bound to each pod VM at creation "
                     "(instances.insert params.resourceManagerTags): %s",
                     len(settings.resource_tags), json.dumps(resource_manager_tags(settings)))

    # ----------------------------------------------------------------- setup

    async def _client(self, kind: str) -> Any:
        if not self._clients:
            async with self._ready_lock:
                if not self._clients:
                    self._clients = await self._threads.run(self._make_clients)
        return self._clients[kind]

    def _make_clients(self) -> dict[str, Any]:
        s = self._settings
        quiet_sdk_logs()
        with translate_errors(functools.partial(errors.translate, action="client setup")):
            credentials = make_credentials(s.credentials, s.api_endpoint)
        options = ClientOptions(api_endpoint=s.api_endpoint) if s.api_endpoint else None
        kinds = {
            "instances": compute_v1.InstancesClient,
            "operations": compute_v1.ZoneOperationsClient,
            "machine_types": compute_v1.MachineTypesClient,
            "images": compute_v1.ImagesClient,
            "projects": compute_v1.ProjectsClient,
            "zones": compute_v1.ZonesClient,
            "networks": compute_v1.NetworksClient,
            "subnetworks": compute_v1.SubnetworksClient,
        }
        return {
            kind: cls(credentials=credentials, client_options=options, transport="rest")
            for kind, cls in kinds.items()
        }

    # ------------------------------------------------------------- API calls

    async def _call(
        self, kind: str, method: str, *, mutating: bool = False,
        translate: Translate | None = None, **kwargs: Any,
    ) -> Any:
        """One SDK call through the limiter and the retry loop; errors translated."""
        client = await self._client(kind)
        action = f"{kind}.{method}"

        def on_retry(exc: Exception, attempt_no: int, delay: float) -> None:
            log.debug("GCE %s: %s, retry %d in %.2fs", action, type(exc).__name__,
                      attempt_no, delay)

        return await self._sdk.call(
            getattr(client, method),
            translate=translate or functools.partial(errors.translate, action=action),
            limiter=self._write_bucket if mutating else self._read_bucket,
            on_retry=on_retry,
            **kwargs,
        )

    async def _wait(self, operation: compute_v1.Operation, kind: str, translate: Translate
                    ) -> compute_v1.Operation:
        """Wait until the zone operation is DONE; raise (translated) when it failed."""
        s = self._settings
        deadline = time.monotonic() + self._timeout
        while operation.status != DONE:
            if time.monotonic() > deadline:
                raise ProviderError(f"GCE {kind}: operation {operation.name} not done after "
                                    f"{self._timeout:.0f}s")
            operation = await self._call(
                "operations", "wait", project=s.project_id, zone=s.zone,
                operation=operation.name, translate=translate,
            )
        if operation.error.errors:
            failed = errors.OperationFailed(
                kind, operation.http_error_status_code,
                [(e.code, e.message) for e in operation.error.errors],
            )
            raise translate(failed) from failed
        return operation

    async def _list(self, filter_: str) -> list[compute_v1.Instance]:
        s = self._settings
        request = compute_v1.ListInstancesRequest(
            project=s.project_id, zone=s.zone, max_results=PAGE_SIZE
        )
        if filter_:
            request.filter = filter_
        client = await self._client("instances")

        def every_page() -> list[compute_v1.Instance]:
            return list(client.list(request=request))

        return await self._sdk.call(
            every_page, limiter=self._read_bucket,
            translate=functools.partial(errors.translate, action="instances.list"),
        )

    async def _image_size(self, image: str) -> int:
        """The image's disk size in GiB (images.get or getFromFamily), cached."""
        cached = self._image_sizes.get(image)
        if cached is not None:
            return cached
        ref = image_ref(image, self._settings.project_id)
        translate = functools.partial(errors.translate, action="images.get", image=image)
        if ref.family:
            found = await self._call("images", "get_from_family", project=ref.project,
                                     family=ref.name, translate=translate)
        else:
            found = await self._call("images", "get", project=ref.project, image=ref.name,
                                     translate=translate)
        size = int(found.disk_size_gb)
        self._image_sizes[image] = size
        return size

    # -------------------------------------------------------------- Provider

    async def create_instance(self, request: InstanceRequest) -> Instance:
        s = self._settings
        sid = request.sandbox_id
        refuse_unsupported(request.spec, self.name, HONOURED_SPEC)
        if not s.disable_cvm and not s.confidential_type:
            raise ConfigError("ConfidentialType must be set when using Confidential VM. "
                              "(GCP_CONFIDENTIAL_TYPE, or DISABLECVM=true)")
        existing = await self._alive_for_sandbox(sid)
        if existing:
            log.info("sandbox=%s instance=%s: reusing the instance already created for it",
                     sid, existing[0].id)
            return await self._finish(request, existing[0])
        machine_type = request.spec.instance_type or s.default_machine_type
        image = source_image(s.image_name, s.project_id)
        if request.spec.image:
            image = source_image(request.spec.image, s.project_id)
            log.info("sandbox=%s: Choosing %s from annotation as the GCP image for the PodVM "
                     "image", sid, image)
        elif not s.image_name:
            raise ConfigError("PODVM_IMAGE_NAME (-image-name) is empty")
        disk_gib = max(await self._image_size(image), s.root_volume_size)
        body = insert_body(request, s, image=image, machine_type=machine_type,
                           disk_gib=disk_gib, node_tags={})
        translate = functools.partial(errors.translate, action="instances.insert",
                                      machine_type=machine_type)
        log.info("sandbox=%s: creating instance %s (type %s, %s)", sid, request.name,
                 machine_type, "non-CVM" if s.disable_cvm else s.confidential_type)
        attempted = False
        try:
            attempted = True
            operation = await self._call(
                "instances", "insert_unary", mutating=True, translate=translate,
                request=compute_v1.InsertInstanceRequest(
                    project=s.project_id, zone=s.zone, instance_resource=body,
                    request_id=request_id(sid, request.attempt),
                ),
            )
            operation = await self._wait(operation, "instances.insert", translate)
            created = await self._get(operation.target_id or request.name)
            if created.status not in ALIVE_STATES:
                # GCE answers a requestId it saw before with that insert, whatever became
                # of the VM since.
                raise ProviderError(
                    f"instance {created.id} made earlier for sandbox {sid} is {created.status} "
                    f"(instances.insert reused the requestId of attempt {request.attempt})"
                )
            log.info("sandbox=%s instance=%s: created instance %s", sid, created.id,
                     request.name)
            return await self._finish(request, created)
        except BaseException:
            # The insert may have made the VM even when its answer was lost (the requestId
            # makes retries safe, not a lost answer): release whatever carries the sandbox.
            if attempted:
                await asyncio.shield(self._release_sandbox_quietly(sid))
            raise

    async def _get(self, instance: str | int) -> compute_v1.Instance:
        s = self._settings
        return await self._call(
            "instances", "get", project=s.project_id, zone=s.zone, instance=str(instance),
            translate=functools.partial(errors.translate, action="instances.get",
                                        instance_id=str(instance)),
        )

    async def _finish(self, request: InstanceRequest, found: compute_v1.Instance) -> Instance:
        """The instance with its addresses; with a public IP, waits for the NAT address."""
        public = self._settings.use_public_ip
        deadline = time.monotonic() + PUBLIC_IP_WAIT
        while True:
            try:
                instance = to_instance(found, public=public, strict=True)
            except AddressNotReady as exc:
                if not public or time.monotonic() + self._poll_interval > deadline:
                    raise ProviderError(str(exc)) from None
                await asyncio.sleep(self._poll_interval)
                found = await self._get(found.id)
                continue
            if public:
                log.info("sandbox=%s instance=%s: public IP %s", request.sandbox_id,
                         instance.id, instance.ips[0])
            return instance

    async def _alive_for_sandbox(self, sandbox_id: str) -> list[compute_v1.Instance]:
        """The sandbox's instances being made or running (not stopping or stopped: a VM
        being deleted is never handed out again)."""
        wanted = {SANDBOX_TAG: sandbox_id}
        return [i for i in await self._list(label_filter(wanted))
                if carries(i, wanted) and i.status in ALIVE_STATES]

    async def _release_sandbox_quietly(self, sid: str) -> None:
        try:
            found = await self._alive_for_sandbox(sid)
        except ProviderError as exc:
            log.warning("sandbox=%s: could not check for a half-created instance: %s", sid, exc)
            return
        for item in found:
            try:
                await self.delete_instance(str(item.id))
            except ProviderError as exc:
                log.error("sandbox=%s instance=%s: could not delete after a failed create: %s",
                          sid, item.id, exc)

    async def delete_instance(self, instance_id: str) -> None:
        s = self._settings
        translate = functools.partial(errors.translate, action="instances.delete",
                                      instance_id=instance_id)
        try:
            operation = await self._call(
                "instances", "delete_unary", mutating=True, translate=translate,
                project=s.project_id, zone=s.zone, instance=instance_id,
            )
            log.info("instance=%s: deleting", instance_id)
            await self._wait(operation, "instances.delete", translate)
        except InstanceNotFound:
            log.info("instance=%s: already gone", instance_id)
            return
        log.info("instance=%s: deleted", instance_id)

    async def list_instances(self, tags: Mapping[str, str]) -> list[Instance]:
        found = await self._list(label_filter(tags))
        public = self._settings.use_public_ip
        return [to_instance(item, public=public) for item in found
                if carries(item, tags) and LABELS.key(SANDBOX_TAG) in item.labels]

    async def instance_types(self) -> InstanceTypeCatalogue:
        s = self._settings
        names = list(s.machine_types) or [s.default_machine_type]
        specs: list[InstanceTypeInfo] = []
        for name in names:
            found = await self._call(
                "machine_types", "get", project=s.project_id, zone=s.zone, machine_type=name,
                translate=functools.partial(_not_found_as_config, what=f"machine type {name}"),
            )
            specs.append(InstanceTypeInfo(
                name=name, vcpus=int(found.guest_cpus), memory_mib=int(found.memory_mb),
                gpus=sum(int(a.guest_accelerator_count) for a in found.accelerators),
            ))
        log.info("machine types: %s", ", ".join(
            f"{t.name} ({t.vcpus} vCPU, {t.memory_mib} MiB, {t.gpus} GPU)" for t in specs))
        return InstanceTypeCatalogue(
            default=s.default_machine_type, allowed=tuple(s.machine_types), specs=tuple(specs)
        )

    async def verify_config(self) -> None:
        s = self._settings
        s.check()
        await self._check("projects", "get", f"project {s.project_id}", project=s.project_id)
        await self._check("zones", "get", f"zone {s.zone}", project=s.project_id, zone=s.zone)
        project, network = owner_and_name(s.network, s.project_id)
        await self._check("networks", "get", f"network {s.network}", project=project,
                          network=network)
        if s.subnetwork:
            path = subnetwork_path(s)
            project, subnet = owner_and_name(path, s.project_id)
            parts = path.split("/")
            region = parts[parts.index("regions") + 1] if "regions" in parts else s.region
            await self._check("subnetworks", "get", f"subnetwork {path}", project=project,
                              region=region, subnetwork=subnet)
        image = source_image(s.image_name, s.project_id)
        try:
            await self._image_size(image)
        except InvalidSpec as exc:
            raise ConfigError(f"PODVM_IMAGE_NAME: {exc}") from exc

    async def _check(self, kind: str, method: str, what: str, **kwargs: Any) -> None:
        await self._call(kind, method, translate=functools.partial(
            _not_found_as_config, what=what), **kwargs)

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await self._threads.run(client.transport.close)
        self._threads.close()


def _not_found_as_config(exc: Exception, what: str) -> ProviderError:
    translated = errors.translate(exc, action=f"checking {what}")
    if isinstance(translated, InvalidSpec):
        return ConfigError(f"{what} not found ({translated})")
    return translated
