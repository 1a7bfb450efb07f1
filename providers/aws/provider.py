"""The AWS provider: confidential EC2 pod VMs through boto3.

Every boto3 call runs on the provider's worker threads behind a client-side token bucket
and a retry loop (:class:`providers.kit.SdkCaller`): throttling is retried with backoff and
full jitter until ``AWS_API_TIMEOUT`` runs out, capacity and quota errors fail at once, and
every failure leaves through the error table of :mod:`providers.aws.errors`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any

import boto3
import botocore.loaders
import botocore.session
from botocore.client import BaseClient
from botocore.config import Config

from providers.aws import errors, nic
from providers.aws.imds import lookup_defaults
from providers.aws.params import (
    ALIVE_STATES,
    GONE_STATES,
    NAME_TAG,
    TAGS,
    AddressNotReady,
    ImageInfo,
    Placement,
    image_info,
    private_ips,
    public_ip,
    run_instances_params,
    state_of,
    to_instance,
)
from providers.aws.settings import (
    MUTATING_BURST_SECONDS,
    READ_BURST_SECONDS,
    READ_RATE_FACTOR,
    AwsSettings,
)
from providers.aws.volumes import EbsVolumes
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
    ProviderUnavailable,
)
from providers.kit import BlockingCalls, SdkCaller, instance_tags, refuse_unsupported
from providers.ratelimit import TokenBucket

log = logging.getLogger(__name__)

PUBLIC_IP_WAIT = 120.0  # seconds, as upstream's instance-running waiter
DESCRIBE_TYPES_CHUNK = 100  # DescribeInstanceTypes accepts at most 100 names per call
UEFI_BOOT_MODES = ("uefi", "uefi-preferred")
# EC2 calls in flight at once: boto3's HTTP connection pool and the worker threads that
# run the blocking calls are sized alike (asyncio's default pool is only cpus + 4 threads).
CONCURRENT_CALLS = 32
# The adaptor picks the instance type from vCPUs, memory and GPUs (instance_types());
# multi_nic is a second ENI (providers.aws.nic); volumes are attached EBS volumes.
HONOURED_SPEC = (
    "instance_type", "vcpus", "memory_mib", "gpus", "image", "volumes", "multi_nic"
)


@functools.cache
def _shared_loader() -> botocore.loaders.Loader:
    """One service-model loader for every client: parsing the EC2 model is the slow part."""
    return botocore.loaders.create_loader()


class AwsProvider:
    name = "aws"

    def __init__(
        self,
        settings: AwsSettings,
        *,
        node_name: str,
        poll_interval: float = 2.0,
    ) -> None:
        self._settings = settings
        self._node = node_name
        self._poll_interval = poll_interval
        self._client: BaseClient | None = None
        self._placement = Placement()
        self._ready_lock = asyncio.Lock()
        self._images: dict[str, ImageInfo] = {}
        self._image_lookups: dict[str, asyncio.Future[ImageInfo]] = {}
        self._threads = BlockingCalls(CONCURRENT_CALLS, "ec2")
        self._volumes = EbsVolumes(self._call, poll_interval=poll_interval)
        self._sdk = SdkCaller(
            self._threads, errors.classify, settings.api_timeout.total_seconds()
        )
        rate = settings.api_rate
        self._write_bucket: TokenBucket | None = None
        self._read_bucket: TokenBucket | None = None
        if rate > 0:
            self._write_bucket = TokenBucket(rate, max(1.0, rate * MUTATING_BURST_SECONDS))
            read_rate = rate * READ_RATE_FACTOR
            self._read_bucket = TokenBucket(read_rate, max(1.0, read_rate * READ_BURST_SECONDS))

    # ----------------------------------------------------------------- setup

    async def _ready(self) -> BaseClient:
        if self._client is not None:
            return self._client
        async with self._ready_lock:
            if self._client is None:
                placement, region = await self._complete_settings()
                client = await self._threads.run(self._make_client, region)
                self._placement = placement
                self._client = client
            return self._client

    async def _complete_settings(self) -> tuple[Placement, str]:
        s = self._settings
        region, subnet, key, groups = s.region, s.subnet_id, s.key_name, s.security_group_ids
        use_lt = s.use_launch_template
        need = {
            "need_region": not region,
            "need_subnet": not subnet and not use_lt,
            "need_key": not key and not use_lt,
            "need_security_groups": not groups and not use_lt,
        }
        if s.imds_url and any(need.values()):
            found = await lookup_defaults(s.imds_url, **need)
            region = region or found.region
            subnet = subnet or found.subnet_id
            key = key or found.key_name
            groups = groups or found.security_group_ids
        return Placement(subnet_id=subnet, security_group_ids=groups, key_name=key), region

    def _make_client(self, region: str) -> BaseClient:
        s = self._settings
        kwargs: dict[str, Any] = {}
        if s.access_key_id and s.secret_key:
            kwargs["aws_access_key_id"] = s.access_key_id
            kwargs["aws_secret_access_key"] = s.secret_key
            if s.session_token:
                kwargs["aws_session_token"] = s.session_token
        elif s.profile:
            kwargs["profile_name"] = s.profile
        if region:
            kwargs["region_name"] = region
        config = Config(
            retries={"total_max_attempts": 1},  # retries happen in providers.ratelimit
            max_pool_connections=CONCURRENT_CALLS,
            connect_timeout=10,
            read_timeout=60,
        )
        try:
            core = botocore.session.get_session()
            core.register_component("data_loader", _shared_loader())
            session = boto3.session.Session(botocore_session=core, **kwargs)
            return session.client("ec2", endpoint_url=s.endpoint_url or None, config=config)
        except Exception as exc:
            raise errors.translate(exc, action="client setup") from exc

    # ------------------------------------------------------------- API calls

    async def _call(
        self,
        action: str,
        *,
        mutating: bool,
        translate: Callable[[Exception], ProviderError] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """One EC2 action through the limiter and the retry loop; errors translated."""
        client = await self._ready()

        def on_retry(exc: Exception, attempt_no: int, delay: float) -> None:
            log.debug("EC2 %s: %s, retry %d in %.2fs", action, errors.error_code(exc) or
                      type(exc).__name__, attempt_no, delay)

        result: dict[str, Any] = await self._sdk.call(
            getattr(client, action),
            translate=translate or functools.partial(errors.translate, action=action),
            limiter=self._write_bucket if mutating else self._read_bucket,
            on_retry=on_retry,
            **kwargs,
        )
        return result

    async def _describe_instances(self, **kwargs: Any) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page_args = dict(kwargs)
            if token:
                page_args["NextToken"] = token
            page = await self._call("describe_instances", mutating=False, **page_args)
            for reservation in page.get("Reservations", ()):
                found.extend(reservation.get("Instances", ()))
            token = page.get("NextToken")
            if not token:
                return found

    async def _image(self, image_id: str, *, for_config: bool = False) -> ImageInfo:
        """The AMI's root device and boot mode; concurrent lookups share one call."""
        cached = self._images.get(image_id)
        if cached is not None:
            return cached
        lookup = self._image_lookups.get(image_id)
        if lookup is None:
            lookup = asyncio.ensure_future(self._fetch_image(image_id))
            self._image_lookups[image_id] = lookup
            lookup.add_done_callback(functools.partial(self._lookup_done, image_id))
        try:
            return await asyncio.shield(lookup)
        except InvalidSpec as exc:
            if for_config:
                raise ConfigError(str(exc)) from exc
            raise

    def _lookup_done(self, image_id: str, lookup: asyncio.Future[ImageInfo]) -> None:
        self._image_lookups.pop(image_id, None)
        if not lookup.cancelled():
            lookup.exception()  # retrieved: its waiters (if any are left) re-raise it

    async def _fetch_image(self, image_id: str) -> ImageInfo:
        def missing(exc: Exception | None = None) -> ProviderError:
            code = errors.error_code(exc) if exc is not None else ""
            if exc is not None and not code.startswith("InvalidAMIID"):
                return errors.translate(exc, action="DescribeImages", image_id=image_id)
            return InvalidSpec(f"AMI {image_id} not found" + (f" ({code})" if code else ""))

        result = await self._call(
            "describe_images", mutating=False, translate=missing, ImageIds=[image_id]
        )
        images = result.get("Images") or []
        if not images:
            raise missing()
        info = image_info(images[0])
        self._images[image_id] = info
        return info

    # -------------------------------------------------------------- Provider

    async def create_instance(self, request: InstanceRequest) -> Instance:
        s = self._settings
        sid = request.sandbox_id
        refuse_unsupported(request.spec, self.name, HONOURED_SPEC)
        await self._ready()
        existing = await self._find_alive(sid)
        if existing is not None:
            log.info("sandbox=%s instance=%s: reusing the instance already created for it",
                     sid, existing["InstanceId"])
            return await self._finish(request, existing)

        instance_type = request.spec.instance_type or s.default_instance_type
        image: ImageInfo | None = None
        image_id = s.image_id
        if not s.use_launch_template:
            if request.spec.image:
                image_id = request.spec.image
                log.info("sandbox=%s: Choosing %s from annotation as the AWS AMI for the PodVM "
                         "image", sid, image_id)
            image = await self._image(image_id)
        elif s.root_volume_size > 0:
            # Upstream sends the root volume with a launch template too, sized from the
            # configured AMI's root device (aws/provider.go, NewProvider and CreateInstance).
            image = await self._image(image_id)
        if image is not None and s.root_volume_size > 0:
            if not image.root_device_name:
                raise InvalidSpec(f"AMI {image_id} has no root device name")
        if request.spec.volumes:
            await self._volumes.validate(request.spec.volumes)
        params = run_instances_params(
            request, s, self._placement, image=image, instance_type=instance_type
        )
        log.info("sandbox=%s: creating instance %s (type %s)", sid, request.name,
                 "from launch template" if s.use_launch_template else instance_type)
        try:
            result = await self._run_instances(params, instance_type, image_id)
        except ProviderUnavailable:
            # The last attempt may have reached EC2 before the connection failed.
            await self._release_sandbox_quietly(sid)
            raise
        created = result["Instances"][0]
        instance_id = str(created["InstanceId"])
        if state_of(created) in GONE_STATES:
            # EC2 answers a ClientToken it saw before with that instance, even terminated.
            raise ProviderError(
                f"instance {instance_id} made earlier for sandbox {sid} is {state_of(created)}"
                f" (RunInstances reused the idempotency token of attempt {request.attempt})"
            )
        log.info("sandbox=%s instance=%s: created instance %s", sid, instance_id, request.name)
        try:
            return await self._finish(request, created)
        except BaseException:
            await self._delete_quietly(instance_id)
            raise

    async def _run_instances(
        self, params: dict[str, Any], instance_type: str, image_id: str
    ) -> dict[str, Any]:
        return await self._call(
            "run_instances",
            mutating=True,
            translate=lambda exc: errors.translate(
                exc, action="RunInstances", instance_type=instance_type, image_id=image_id
            ),
            **params,
        )

    async def _release_sandbox_quietly(self, sid: str) -> None:
        try:
            found = await self._alive_for_sandbox(sid)
        except ProviderError as exc:
            log.warning("sandbox=%s: could not check for a half-created instance: %s", sid, exc)
            return
        for item in found:
            await self._delete_quietly(str(item["InstanceId"]))

    async def _finish(self, request: InstanceRequest, found: Mapping[str, Any]) -> Instance:
        instance_id = str(found["InstanceId"])
        try:
            ips = list(private_ips(found))
        except AddressNotReady as exc:
            raise ProviderError(str(exc)) from None
        if self._settings.use_public_ip:
            address = await self._wait_public_ip(instance_id)
            ips[0] = address
            log.info("sandbox=%s instance=%s: public IP %s", request.sandbox_id, instance_id,
                     address)
        if request.spec.volumes:
            await self._volumes.attach(instance_id, request.spec.volumes)
        if request.spec.multi_nic and not nic.has_addon_nic(found):
            await self._add_addon_nic(request, instance_id)
        return to_instance(found, public_first=False, ips=ips)

    async def _add_addon_nic(self, request: InstanceRequest, instance_id: str) -> None:
        tags = TAGS.to_cloud(
            instance_tags(request, defaults=self._settings.extra_tags, name_tag=NAME_TAG)
        )
        nic_id = await nic.add_addon_nic(
            self._call, self._describe_instances, instance_id, self._placement, tags,
            public_ip=self._settings.use_public_ip, poll=self._poll_interval,
        )
        log.info("sandbox=%s instance=%s: second network interface %s (external network)",
                 request.sandbox_id, instance_id, nic_id)

    async def _wait_public_ip(self, instance_id: str) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PUBLIC_IP_WAIT
        while True:
            try:
                found = await self._describe_instances(InstanceIds=[instance_id])
            except InstanceNotFound:
                found = []  # not visible yet (eventual consistency)
            if found:
                state = state_of(found[0])
                if state == "running":
                    address = public_ip(found[0])
                    if address is None:
                        raise ProviderError(f"instance {instance_id}: public IP address is empty")
                    return address
                if state in GONE_STATES:
                    raise ProviderError(f"instance {instance_id} is {state} while starting")
            if loop.time() + self._poll_interval > deadline:
                raise ProviderError(
                    f"instance {instance_id} not running after {PUBLIC_IP_WAIT:.0f}s"
                )
            await asyncio.sleep(self._poll_interval)

    async def _alive_for_sandbox(self, sandbox_id: str) -> list[dict[str, Any]]:
        return await self._describe_instances(Filters=[
            {"Name": f"tag:{SANDBOX_TAG}", "Values": [sandbox_id]},
            {"Name": "instance-state-name", "Values": list(ALIVE_STATES)},
        ])

    async def _find_alive(self, sandbox_id: str) -> dict[str, Any] | None:
        found = await self._alive_for_sandbox(sandbox_id)
        return found[0] if found else None

    async def delete_instance(self, instance_id: str) -> None:
        if self._settings.use_public_ip:
            await self._release_elastic_ips(instance_id)
        try:
            await self._call("terminate_instances", mutating=True, InstanceIds=[instance_id],
                             translate=lambda exc: errors.translate(
                                 exc, action="TerminateInstances", instance_id=instance_id))
        except InstanceNotFound:
            log.info("instance=%s: already gone", instance_id)
            return
        except ProviderError:
            # Some endpoints refuse to terminate a terminated instance; that is success too.
            if await self._is_gone(instance_id):
                log.info("instance=%s: already terminated", instance_id)
                return
            raise
        log.info("instance=%s: terminating", instance_id)

    async def _release_elastic_ips(self, instance_id: str) -> None:
        """Upstream's DeleteInstance releases them first and only logs a failure."""
        try:
            await nic.release_elastic_ips(self._call, instance_id)
        except ProviderError as exc:
            log.warning("instance=%s: failed to deallocate the Elastic IP address: %s",
                        instance_id, exc)

    async def _is_gone(self, instance_id: str) -> bool:
        try:
            found = await self._describe_instances(InstanceIds=[instance_id])
        except InstanceNotFound:
            return True
        except ProviderError:
            return False
        return not found or state_of(found[0]) in GONE_STATES

    async def _delete_quietly(self, instance_id: str) -> None:
        try:
            await self.delete_instance(instance_id)
        except ProviderError as exc:
            log.error("instance=%s: could not delete after a failed create: %s", instance_id, exc)

    async def list_instances(self, tags: Mapping[str, str]) -> list[Instance]:
        filters = [{"Name": f"tag:{key}", "Values": [value]}
                   for key, value in TAGS.to_cloud(tags).items()]
        filters.append({"Name": "instance-state-name", "Values": list(ALIVE_STATES)})
        found = await self._describe_instances(Filters=filters)
        public_first = self._settings.use_public_ip
        return [to_instance(item, public_first=public_first) for item in found
                if state_of(item) not in GONE_STATES]

    async def instance_types(self) -> InstanceTypeCatalogue:
        s = self._settings
        names = list(s.instance_types) or [s.default_instance_type]
        specs: list[InstanceTypeInfo] = []
        for start in range(0, len(names), DESCRIBE_TYPES_CHUNK):
            chunk = names[start:start + DESCRIBE_TYPES_CHUNK]
            result = await self._call(
                "describe_instance_types", mutating=False, InstanceTypes=chunk,
                translate=functools.partial(_types_error, names=chunk),
            )
            for item in result.get("InstanceTypes", ()):
                gpus = sum(int(g.get("Count", 0)) for g in
                           (item.get("GpuInfo") or {}).get("Gpus", ()))
                specs.append(InstanceTypeInfo(
                    name=str(item["InstanceType"]),
                    vcpus=int(item["VCpuInfo"]["DefaultVCpus"]),
                    memory_mib=int(item["MemoryInfo"]["SizeInMiB"]),
                    gpus=gpus,
                ))
        order = {name: index for index, name in enumerate(names)}
        specs.sort(key=lambda spec: order.get(spec.name, len(order)))
        return InstanceTypeCatalogue(
            default=s.default_instance_type, allowed=tuple(s.instance_types), specs=tuple(specs)
        )

    async def verify_config(self) -> None:
        s = self._settings
        await self._ready()
        if not s.image_id:
            raise ConfigError("PODVM_AMI_ID (-imageid) is empty")
        if s.use_launch_template:
            await self._call(
                "describe_launch_templates", mutating=False,
                LaunchTemplateNames=[s.launch_template_name],
                translate=lambda exc: _not_found_as_config(
                    exc, f"launch template {s.launch_template_name}"),
            )
            return
        image = await self._image(s.image_id, for_config=True)
        if not s.disable_cvm and image.boot_mode not in UEFI_BOOT_MODES:
            raise ConfigError(
                f"AMI {s.image_id} boot mode is {image.boot_mode or 'unset'}; SEV-SNP "
                "confidential VMs need a uefi AMI (or set DISABLECVM=true)"
            )
        if self._placement.subnet_id:
            subnet = self._placement.subnet_id
            await self._call("describe_subnets", mutating=False, SubnetIds=[subnet],
                             translate=lambda exc: _not_found_as_config(exc, f"subnet {subnet}"))
        if self._placement.security_group_ids:
            groups = list(self._placement.security_group_ids)
            await self._call(
                "describe_security_groups", mutating=False, GroupIds=groups,
                translate=lambda exc: _not_found_as_config(
                    exc, f"security groups {','.join(groups)}"),
            )

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await self._threads.run(client.close)
        self._threads.close()


def _not_found_as_config(exc: Exception, what: str) -> ProviderError:
    code = errors.error_code(exc)
    if "NotFound" in code or code.startswith("Invalid"):
        return ConfigError(f"{what} not found ({code})")
    return errors.translate(exc, action=f"checking {what}")


def _types_error(exc: Exception, names: list[str]) -> ProviderError:
    code = errors.error_code(exc)
    if code == "InvalidInstanceType":
        return ConfigError(f"unknown instance type in {','.join(names)} ({exc})")
    return errors.translate(exc, action="DescribeInstanceTypes")
