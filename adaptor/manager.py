"""The sandbox manager: CreateVM, StartVM, StopVM and GetInfo behind the ttrpc service.

Guarantees:
- At most one instance per sandbox id. Calls for one id are serialised; a repeated identical
  CreateVM returns the same socket path (a different one is ``sandbox <id> already exists``);
  StartVM of a running sandbox reuses its instance; a StartVM cancelled while the provider
  is creating the instance lets the creation finish in the background and deletes the result,
  and later calls for that id wait for that clean-up first.
- Any StartVM failure after the instance exists deletes it (shielded from cancellation) and
  undoes the tunnel. If that delete keeps failing the record stays (state ``stop-failed``)
  with the instance id, so a StopVM or a sweep can retry.
- StopVM is idempotent: an unknown id (never created, already stopped, or lost in a restart)
  is logged and succeeds. A StopVM that arrives while StartVM is still running cancels it.
  When the delete keeps failing StopVM reports it and keeps the record.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field

from adaptor import annotations as ann
from adaptor.cloudconfig import build_apf, pod_initdata, render_user_data
from adaptor.errors import (
    AdaptorError,
    ForwarderUnreachable,
    InvalidRequest,
    SandboxExists,
    SandboxNotFound,
    StartFailed,
    StopFailed,
)
from adaptor.instancetype import select_instance_type
from adaptor.naming import instance_name
from adaptor.network.base import WorkerNetwork
from adaptor.proxy import AgentProxy, ForwarderDialer
from adaptor.proxy.dialer import DialTimeout
from adaptor.sandbox import (
    APF_COPY_NAME,
    SOCKET_NAME,
    SandboxRecord,
    SandboxState,
    request_fingerprint,
)
from adaptor.tls import AgentTLS
from protocols import apf
from providers.base import (
    NODE_TAG,
    POD_NAME_TAG,
    POD_NAMESPACE_TAG,
    SANDBOX_TAG,
    Instance,
    InstanceRequest,
    InstanceSpec,
    InstanceTypeCatalogue,
    IPAddress,
    Provider,
    ProviderError,
)

log = logging.getLogger(__name__)

AuthSource = Callable[[str, str], Awaitable[str | None]]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Instance deletion retries: ``attempts`` tries, exponential backoff between them."""

    attempts: int = 5
    initial_delay: float = 1.0
    max_delay: float = 30.0

    def delays(self) -> Iterator[float]:
        delay = self.initial_delay
        for _ in range(self.attempts - 1):
            yield delay
            delay = min(delay * 2, self.max_delay)


@dataclass(frozen=True, slots=True)
class ManagerConfig:
    pods_dir: str
    node_name: str
    forwarder_port: int = 15150
    proxy_timeout: float = 300.0
    enable_scratch_space: bool = False
    ext_network_via_podvm: bool = False
    default_initdata: str = ""
    delete_retry: RetryPolicy = field(default_factory=RetryPolicy)


class SandboxManager:
    def __init__(
        self,
        config: ManagerConfig,
        *,
        provider: Provider,
        network: WorkerNetwork,
        tls: AgentTLS,
        catalogue: InstanceTypeCatalogue | None,
        auth_source: AuthSource | None = None,
    ) -> None:
        self._config = config
        self._provider = provider
        self._network = network
        self._tls = tls
        self._catalogue = catalogue
        self._auth_source = auth_source
        self._records: dict[str, SandboxRecord] = {}
        self._proxies: dict[str, AgentProxy] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._starting: dict[str, asyncio.Task[object]] = {}
        self._reapers: dict[str, asyncio.Task[None]] = {}
        self._changed = asyncio.Condition()
        self._closed = False

    # ------------------------------------------------------------------ views
    def record(self, sandbox_id: str) -> SandboxRecord | None:
        return self._records.get(sandbox_id)

    def records(self) -> list[SandboxRecord]:
        return list(self._records.values())

    def proxy(self, sandbox_id: str) -> AgentProxy | None:
        return self._proxies.get(sandbox_id)

    def _lock(self, sandbox_id: str) -> asyncio.Lock:
        lock = self._locks.get(sandbox_id)
        if lock is None:
            lock = self._locks[sandbox_id] = asyncio.Lock()
        return lock

    async def _set(self, record: SandboxRecord) -> None:
        self._records[record.sandbox_id] = record
        async with self._changed:
            self._changed.notify_all()

    # ------------------------------------------------------------------ CreateVM
    async def create(
        self, sandbox_id: str, annotations: Mapping[str, str], netns_path: str
    ) -> str:
        if not sandbox_id:
            raise InvalidRequest("empty sandbox id")
        fingerprint = request_fingerprint(sandbox_id, annotations, netns_path)
        async with self._lock(sandbox_id):
            existing = self._records.get(sandbox_id)
            if existing is not None:
                if existing.fingerprint == fingerprint:
                    log.info(
                        "sandbox=%s: repeated CreateVM, returning the same agent socket",
                        sandbox_id,
                    )
                    return existing.socket_path
                raise SandboxExists(sandbox_id)
            record = await self._prepare(sandbox_id, annotations, netns_path, fingerprint)
            await self._set(record)
        log.info(
            "create a sandbox %s for pod %s in namespace %s (netns: %s)",
            sandbox_id, record.pod_name, record.pod_namespace, netns_path,
        )
        return record.socket_path

    def _spec(self, sandbox_id: str, annotations: Mapping[str, str]) -> InstanceSpec:
        res = ann.resources(annotations)
        instance_type: str | None = None
        if self._catalogue is not None:
            instance_type, reason = select_instance_type(
                self._catalogue,
                requested=res.instance_type or None,
                vcpus=res.vcpus,
                memory_mib=res.memory_mib,
                gpus=res.gpus,
            )
            log.info(
                "sandbox=%s: instance type %s (selected by %s)", sandbox_id, instance_type, reason
            )
        elif res.instance_type:
            instance_type = res.instance_type
        if res.image:
            log.info("sandbox=%s: Choosing %s from annotation as the pod VM image",
                     sandbox_id, res.image)
        return InstanceSpec(
            instance_type=instance_type,
            vcpus=res.vcpus,
            memory_mib=res.memory_mib,
            gpus=res.gpus,
            gpu_model=res.gpu_model,
            image=res.image or None,
            multi_nic=self._config.ext_network_via_podvm,
        )

    async def _prepare(
        self,
        sandbox_id: str,
        annotations: Mapping[str, str],
        netns_path: str,
        fingerprint: str,
    ) -> SandboxRecord:
        pod_name = ann.pod_name(annotations)
        pod_namespace = ann.pod_namespace(annotations)
        spec = self._spec(sandbox_id, annotations)
        initdata_b64 = pod_initdata(annotations, self._config.default_initdata)
        name = instance_name(pod_name, sandbox_id)
        auth_json = None
        if self._auth_source is not None:
            auth_json = await self._auth_source(pod_namespace, pod_name)
        network = await self._network.inspect(sandbox_id, netns_path)
        try:
            config = build_apf(
                pod_name=pod_name,
                pod_namespace=pod_namespace,
                network=network,
                material=self._tls.server_material(name),
                profile=self._tls.profile,
            )
            apf_json = apf.dumps(config)
            user_data = render_user_data(
                apf_json=apf_json,
                initdata_b64=initdata_b64,
                auth_json=auth_json,
                scratch_space=self._config.enable_scratch_space,
            )
            pod_dir = os.path.join(self._config.pods_dir, sandbox_id)
            _write_private(os.path.join(pod_dir, APF_COPY_NAME), apf_json)
        except BaseException:
            self._network.release(sandbox_id)
            raise
        return SandboxRecord(
            sandbox_id=sandbox_id,
            pod_name=pod_name,
            pod_namespace=pod_namespace,
            netns_path=netns_path,
            instance_name=name,
            socket_path=os.path.join(pod_dir, SOCKET_NAME),
            spec=spec,
            apf_json=apf_json,
            user_data=user_data,
            fingerprint=fingerprint,
            server_name=self._tls.server_name(name) or "",
        )

    # ------------------------------------------------------------------ StartVM
    async def start(self, sandbox_id: str) -> None:
        task = asyncio.current_task()
        async with self._lock(sandbox_id):
            await self._wait_reaper(sandbox_id)
            record = self._records.get(sandbox_id)
            if record is None:
                raise SandboxNotFound(sandbox_id, "getting sandbox")
            proxy = self._proxies.get(sandbox_id)
            if record.state is SandboxState.RUNNING and proxy is not None and proxy.ready:
                log.info("sandbox=%s: StartVM of a running sandbox; nothing to do", sandbox_id)
                return
            if record.state is SandboxState.STOP_FAILED:
                raise StartFailed(
                    f"sandbox {sandbox_id} is being stopped: its instance "
                    f"{record.instance_id} could not be deleted yet"
                )
            if task is not None:
                self._starting[sandbox_id] = task
            try:
                await self._start(record)
            finally:
                if self._starting.get(sandbox_id) is task:
                    del self._starting[sandbox_id]

    async def _start(self, record: SandboxRecord) -> None:
        sid = record.sandbox_id
        if record.instance_id:
            # Running instance without a proxy (e.g. the proxy was lost): reconnect only.
            instance = Instance(
                id=record.instance_id,
                name=record.instance_name,
                ips=tuple(_ip(ip) for ip in record.instance_ips),
            )
            network_ready = True
        else:
            await self._set(record.replace(state=SandboxState.STARTING))
            try:
                instance = await self._create_instance(record)
            except BaseException:
                self._records[sid] = record.replace(state=SandboxState.CREATED)
                raise
            record = record.replace(
                state=SandboxState.STARTING,
                instance_id=instance.id,
                instance_ips=tuple(str(ip) for ip in instance.ips),
            )
            await self._set(record)
            log.info("sandbox=%s: instance %s (%s) created, ips %s", sid, instance.id,
                     instance.name, ",".join(record.instance_ips) or "-")
            network_ready = False
        network = apf.loads(record.apf_json).pod_network or apf.PodNetwork(tunnel_type="none")
        proxy: AgentProxy | None = None
        try:
            if not instance.ips:
                raise StartFailed("instance IP is not available")
            if not network_ready:
                await self._network.setup(sid, record.netns_path, network, instance.ips)
                network_ready = True
            proxy = AgentProxy(
                sid,
                record.socket_path,
                ForwarderDialer(
                    sid,
                    str(instance.ips[0]),
                    self._config.forwarder_port,
                    self._tls.client_context(),
                    record.server_name or None,
                ),
                proxy_timeout=self._config.proxy_timeout,
            )
            try:
                await proxy.start()
            except DialTimeout as exc:
                raise ForwarderUnreachable(str(exc)) from None
        except BaseException as exc:
            log.error("sandbox=%s: StartVM failed, cleaning up instance %s: %s",
                      sid, instance.id, _describe(exc))
            await _shielded(self._undo_start(record, network, network_ready))
            raise
        self._proxies[sid] = proxy
        await self._set(record.replace(state=SandboxState.RUNNING))
        log.info("sandbox=%s: pod VM %s is ready", sid, instance.id)

    async def _create_instance(self, record: SandboxRecord) -> Instance:
        request = InstanceRequest(
            name=record.instance_name,
            sandbox_id=record.sandbox_id,
            pod_name=record.pod_name,
            pod_namespace=record.pod_namespace,
            user_data=record.user_data.encode(),
            spec=record.spec,
            tags={
                NODE_TAG: self._config.node_name,
                SANDBOX_TAG: record.sandbox_id,
                POD_NAME_TAG: record.pod_name,
                POD_NAMESPACE_TAG: record.pod_namespace,
            },
        )
        task = asyncio.ensure_future(self._provider.create_instance(request))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            # The caller gave up (deadline, closed connection, StopVM): whatever the provider
            # creates from here on must not outlive this call.
            log.warning("sandbox=%s: StartVM cancelled while creating instance %s; it will be "
                        "deleted once created", record.sandbox_id, record.instance_name)
            self._reapers[record.sandbox_id] = asyncio.ensure_future(
                self._reap(record.sandbox_id, task)
            )
            raise
        except ProviderError as exc:
            raise StartFailed(f"creating an instance : {exc}") from exc

    async def _reap(self, sandbox_id: str, task: asyncio.Future[Instance]) -> None:
        try:
            await self._reap_instance(sandbox_id, task)
        finally:
            self._reapers.pop(sandbox_id, None)

    async def _reap_instance(self, sandbox_id: str, task: asyncio.Future[Instance]) -> None:
        try:
            instance = await task
        except Exception as exc:
            log.info("sandbox=%s: abandoned instance creation failed: %s", sandbox_id, exc)
            return
        try:
            await self._delete_with_retries(sandbox_id, instance.id)
        except ProviderError as exc:
            log.error("sandbox=%s: could not delete abandoned instance %s: %s",
                      sandbox_id, instance.id, exc)
            record = self._records.get(sandbox_id)
            if record is not None:
                self._records[sandbox_id] = record.replace(
                    state=SandboxState.STOP_FAILED, instance_id=instance.id
                )

    async def _wait_reaper(self, sandbox_id: str) -> None:
        reaper = self._reapers.get(sandbox_id)
        if reaper is not None:
            await asyncio.shield(reaper)

    async def _undo_start(
        self, record: SandboxRecord, network: apf.PodNetwork, network_ready: bool
    ) -> None:
        sid = record.sandbox_id
        proxy = self._proxies.pop(sid, None)
        if proxy is not None:
            await proxy.aclose()
        if network_ready:
            try:
                await self._network.teardown(sid, record.netns_path, network)
            except Exception as exc:
                log.error("sandbox=%s: tunnel teardown failed: %s", sid, exc)
        try:
            await self._delete_with_retries(sid, record.instance_id)
        except ProviderError as exc:
            log.error("sandbox=%s: instance %s could not be deleted; keeping the record so "
                      "StopVM can retry: %s", sid, record.instance_id, exc)
            self._records[sid] = record.replace(state=SandboxState.STOP_FAILED)
            return
        self._records[sid] = record.replace(
            state=SandboxState.CREATED, instance_id="", instance_ips=()
        )

    async def _delete_with_retries(self, sandbox_id: str, instance_id: str) -> None:
        policy = self._config.delete_retry
        delays = policy.delays()
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._provider.delete_instance(instance_id)
            except ProviderError as exc:
                delay = next(delays, None)
                if delay is None:
                    raise
                log.warning("sandbox=%s: deleting instance %s failed (attempt %d/%d), "
                            "retrying in %.1fs: %s", sandbox_id, instance_id, attempt,
                            policy.attempts, delay, exc)
                await asyncio.sleep(delay)
            else:
                log.info("sandbox=%s: instance %s deleted", sandbox_id, instance_id)
                return

    # ------------------------------------------------------------------ StopVM
    async def stop(self, sandbox_id: str) -> None:
        starting = self._starting.get(sandbox_id)
        if starting is not None and not starting.done():
            log.info("sandbox=%s: StopVM cancels the StartVM in progress", sandbox_id)
            starting.cancel()
        async with self._lock(sandbox_id):
            await self._wait_reaper(sandbox_id)
            record = self._records.get(sandbox_id)
            if record is None:
                log.warning("sandbox=%s: StopVM for an unknown sandbox; nothing to stop",
                            sandbox_id)
                return
            proxy = self._proxies.pop(sandbox_id, None)
            if proxy is not None:
                await proxy.aclose()
            if record.instance_id:
                try:
                    await self._delete_with_retries(sandbox_id, record.instance_id)
                except ProviderError as exc:
                    await self._set(record.replace(state=SandboxState.STOP_FAILED))
                    raise StopFailed(
                        f"stopping VM: deleting instance {record.instance_id} failed after "
                        f"{self._config.delete_retry.attempts} attempts: {exc}; the sandbox "
                        "is kept so that StopVM can be retried"
                    ) from exc
                network = apf.loads(record.apf_json).pod_network
                if network is not None:
                    try:
                        await self._network.teardown(sandbox_id, record.netns_path, network)
                    except Exception as exc:
                        log.error("sandbox=%s: tunnel teardown failed: %s", sandbox_id, exc)
            self._network.release(sandbox_id)
            del self._records[sandbox_id]
            self._locks.pop(sandbox_id, None)
        log.info("sandbox=%s: stopped", sandbox_id)

    # ------------------------------------------------------------------ GetInfo
    def _instance_of(self, pod_namespace: str, pod_name: str) -> str:
        for record in self._records.values():
            if (record.pod_name, record.pod_namespace) == (pod_name, pod_namespace):
                if record.instance_id:
                    return record.instance_id
        return ""

    async def instance_id(
        self, pod_namespace: str, pod_name: str, wait: bool, timeout: float | None
    ) -> str:
        """The instance id of a pod ("" when none); with ``wait``, block until there is one."""
        if wait:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: bool(self._instance_of(pod_namespace,
                                                                            pod_name)))
        return self._instance_of(pod_namespace, pod_name)

    # ------------------------------------------------------------------ lifecycle
    async def aclose(self) -> None:
        """Stop the proxies (pod VMs keep running) and wait for background clean-ups."""
        self._closed = True
        for task in list(self._starting.values()):
            task.cancel()
        proxies, self._proxies = list(self._proxies.values()), {}
        for proxy in proxies:
            await proxy.aclose()
        reapers = list(self._reapers.values())
        if reapers:
            await asyncio.gather(*reapers, return_exceptions=True)


async def _shielded(coro: Awaitable[None]) -> None:
    """Run clean-up to completion even if the caller is cancelled meanwhile."""
    task = asyncio.ensure_future(coro)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled by the caller"
    if isinstance(exc, AdaptorError | ProviderError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text)


def _write_private(path: str, text: str) -> None:
    """Write ``text`` atomically with mode 0600 (it holds the VM's TLS key)."""
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)
