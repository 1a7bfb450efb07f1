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
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from adaptor.builder import AuthSource, SandboxBuilder
from adaptor.errors import (
    AdaptorError,
    ForwarderUnreachable,
    InvalidRequest,
    SandboxExists,
    SandboxNotFound,
    StartFailed,
    StopFailed,
)
from adaptor.network.base import WorkerNetwork
from adaptor.proxy import AgentProxy, ForwarderDialer
from adaptor.proxy.dialer import DialTimeout
from adaptor.sandbox import (
    SandboxRecord,
    SandboxState,
    request_fingerprint,
)
from adaptor.store import SandboxStore
from adaptor.tls import AgentTLS
from protocols import apf
from providers.base import (
    NODE_TAG,
    SANDBOX_TAG,
    Instance,
    InstanceRequest,
    InstanceTypeCatalogue,
    IPAddress,
    Provider,
    ProviderError,
    adaptor_tags,
)

if TYPE_CHECKING:
    from adaptor.metrics import Metrics

log = logging.getLogger(__name__)

# How long shutdown waits for cancelled StartVMs to delete the instances they created.
START_CLEANUP_TIMEOUT = 30.0


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
        store: SandboxStore | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._config = config
        self._store = store
        self._metrics = metrics
        self._provider = provider
        self._network = network
        self._tls = tls
        self._catalogue = catalogue
        self._auth_source = auth_source
        self._builder = SandboxBuilder(config.pods_dir, config.node_name,
                                       enable_scratch_space=config.enable_scratch_space,
                                       ext_network_via_podvm=config.ext_network_via_podvm,
                                       default_initdata=config.default_initdata,
                                       network=network, tls=tls, catalogue=catalogue,
                                       auth_source=auth_source)
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

    def _put(self, record: SandboxRecord) -> None:
        """Keep ``record`` (in memory and, with a store, on disk) before acting on it."""
        if self._store is not None:
            self._store.save(record)
        self._records[record.sandbox_id] = record

    def _drop(self, sandbox_id: str) -> None:
        if self._store is not None:
            self._store.delete(sandbox_id)
        self._records.pop(sandbox_id, None)

    async def _set(self, record: SandboxRecord) -> None:
        self._put(record)
        async with self._changed:
            self._changed.notify_all()

    def counts_by_state(self) -> dict[str, float]:
        counts = {state.value: 0.0 for state in SandboxState}
        for record in self._records.values():
            counts[record.state.value] += 1
        return counts

    def forwarder_connections(self) -> dict[str, float]:
        return {"": float(sum(1 for p in self._proxies.values() if p.upstream_connected))}

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
            record = await self._builder.build(sandbox_id, annotations, netns_path, fingerprint)
            await self._set(record)
        log.info(
            "create a sandbox %s for pod %s in namespace %s (netns: %s)",
            sandbox_id, record.pod_name, record.pod_namespace, netns_path,
        )
        return record.socket_path

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
                async with self._start_lock(sandbox_id) as waited:
                    if waited:
                        record = self._reload(sandbox_id)
                        if record.state is SandboxState.RUNNING:
                            await self._resume(record)
                            return
                    await self._start(record)
            finally:
                if self._starting.get(sandbox_id) is task:
                    del self._starting[sandbox_id]

    @contextlib.asynccontextmanager
    async def _start_lock(self, sandbox_id: str) -> AsyncIterator[bool]:
        """Hold the sandbox's start lock file; yields True if another process held it first
        (a rolling update: the old adaptor is finishing a StartVM)."""
        if self._store is None:
            yield False
            return
        waited = False
        while (fd := self._store.try_start_lock(sandbox_id)) is None:
            if not waited:
                log.info("sandbox=%s: another adaptor process is starting this sandbox; "
                         "waiting for it", sandbox_id)
            waited = True
            await asyncio.sleep(0.2)
        try:
            yield waited
        finally:
            self._store.release_start_lock(fd)

    def _reload(self, sandbox_id: str) -> SandboxRecord:
        record = self._store.load(sandbox_id) if self._store is not None else None
        if record is None:
            self._records.pop(sandbox_id, None)
            raise SandboxNotFound(sandbox_id, "getting sandbox")
        self._records[sandbox_id] = record
        return record

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
                self._put(record.replace(state=SandboxState.CREATED))
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
            proxy = self._make_proxy(record, str(instance.ips[0]))
            try:
                await proxy.start()
            except DialTimeout as exc:
                raise ForwarderUnreachable(str(exc)) from None
        except BaseException as exc:
            # A cancellation is the caller leaving or a StopVM, not a failure of ours.
            level = logging.WARNING if isinstance(exc, asyncio.CancelledError) else logging.ERROR
            log.log(level, "sandbox=%s: StartVM failed, cleaning up instance %s: %s",
                    sid, instance.id, _describe(exc))
            await _shielded(self._undo_start(record, network, network_ready))
            raise
        self._proxies[sid] = proxy
        await self._set(record.replace(state=SandboxState.RUNNING))
        log.info("sandbox=%s: pod VM %s is ready", sid, instance.id)

    def _make_proxy(self, record: SandboxRecord, ip: str) -> AgentProxy:
        sid = record.sandbox_id
        return AgentProxy(
            sid,
            record.socket_path,
            ForwarderDialer(sid, ip, self._config.forwarder_port, self._tls.client_context(),
                            record.server_name or None),
            proxy_timeout=self._config.proxy_timeout,
            metrics=self._metrics,
        )

    async def _resume(self, record: SandboxRecord) -> None:
        """Serve a running sandbox's agent socket again (after a restart or a takeover)."""
        sid = record.sandbox_id
        if not record.instance_ips:
            raise StartFailed(f"sandbox {sid}: running record without instance IPs")
        old = self._proxies.pop(sid, None)
        if old is not None:
            await old.aclose()
        proxy = self._make_proxy(record, record.instance_ips[0])
        await proxy.resume()
        self._proxies[sid] = proxy

    async def _create_instance(self, record: SandboxRecord) -> Instance:
        request = InstanceRequest(
            name=record.instance_name,
            sandbox_id=record.sandbox_id,
            pod_name=record.pod_name,
            pod_namespace=record.pod_namespace,
            user_data=record.user_data.encode(),
            spec=record.spec,
            tags=adaptor_tags(self._config.node_name, record.sandbox_id, record.pod_name,
                              record.pod_namespace),
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
                self._put(record.replace(state=SandboxState.STOP_FAILED, instance_id=instance.id))

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
            self._put(record.replace(state=SandboxState.STOP_FAILED))
            return
        self._put(record.replace(state=SandboxState.CREATED, instance_id="", instance_ips=()))

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
            self._drop(sandbox_id)
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

    # ------------------------------------------------------------------ restart
    def adopt(self, record: SandboxRecord) -> None:
        """Take over a record loaded from the store (nothing is written)."""
        self._records[record.sandbox_id] = record

    def forget(self, sandbox_id: str) -> None:
        """Drop a sandbox from memory only (another adaptor removed its record)."""
        self._records.pop(sandbox_id, None)

    def lock(self, sandbox_id: str) -> asyncio.Lock:
        """The lock that serialises calls for one sandbox."""
        return self._lock(sandbox_id)

    def track(self, sandbox_id: str, task: asyncio.Task[None]) -> None:
        """Own a background clean-up for a sandbox; its calls wait for it first."""
        self._reapers[sandbox_id] = task
        task.add_done_callback(lambda _t: self._reapers.pop(sandbox_id, None)
                               if self._reapers.get(sandbox_id) is task else None)

    async def resume(self, record: SandboxRecord) -> None:
        await self._resume(record)

    async def abandon_start(self, record: SandboxRecord) -> None:
        """A StartVM died with its adaptor: delete whatever instance it may have created
        (the recorded one and any tagged with this sandbox) and go back to ``created``, so
        that a retry makes exactly one VM. Call with the sandbox's lock held."""
        sid = record.sandbox_id
        ids = [record.instance_id] if record.instance_id else []
        try:
            found = await self._provider.list_instances(
                {NODE_TAG: self._config.node_name, SANDBOX_TAG: sid}
            )
        except ProviderError as exc:
            log.warning("sandbox=%s: cannot list its instances (the orphan sweep will find "
                        "them later): %s", sid, exc)
            found = []
        ids += [i.id for i in found
                if i.tags.get(NODE_TAG) == self._config.node_name and i.id not in ids]
        network = apf.loads(record.apf_json).pod_network
        if record.instance_id and network is not None:
            try:
                await self._network.teardown(sid, record.netns_path, network)
            except Exception as exc:
                log.error("sandbox=%s: tunnel teardown failed: %s", sid, exc)
        for instance_id in ids:
            log.info("sandbox=%s instance=%s: deleting the instance of an interrupted StartVM",
                     sid, instance_id)
            try:
                await self._delete_with_retries(sid, instance_id)
            except ProviderError as exc:
                log.error("sandbox=%s instance=%s: could not delete it; the sweep retries: %s",
                          sid, instance_id, exc)
                await self._set(record.replace(state=SandboxState.STOP_FAILED,
                                               instance_id=instance_id))
                return
        await self._set(record.replace(state=SandboxState.CREATED, instance_id="",
                                       instance_ips=()))

    # ------------------------------------------------------------------ lifecycle
    async def aclose(self) -> None:
        """Stop the proxies (pod VMs keep running) and wait for background clean-ups."""
        self._closed = True
        starting = list(self._starting.values())
        for task in starting:
            task.cancel()
        if starting:
            # Each cancelled StartVM deletes the instance it created before it ends; wait for
            # that (bounded): a record left in "starting" is cleaned at the next start anyway.
            await asyncio.wait(starting, timeout=START_CLEANUP_TIMEOUT)
        proxies, self._proxies = list(self._proxies.values()), {}
        for proxy in proxies:
            await proxy.aclose()
        reapers = list(self._reapers.values())
        if reapers:
            await asyncio.gather(*reapers, return_exceptions=True)


async def _shielded(coro: Awaitable[None]) -> None:
    """Run clean-up to completion even if the caller is cancelled meanwhile, once or again
    (a StartVM whose caller left is cancelled a second time when the daemon shuts down)."""
    task = asyncio.ensure_future(coro)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    task.result()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled by the caller"
    if isinstance(exc, AdaptorError | ProviderError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text)
