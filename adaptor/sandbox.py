"""One sandbox: its record, its state (see :mod:`adaptor.states`), its lock, its agent proxy
(these in :mod:`adaptor.sandboxcore`), its StartVM task and its background clean-up, and the
operations on it: ``start()``, ``stop()``, ``retry_stop()``, ``resume()``, ``recover()``.

Every call for the sandbox (StartVM, StopVM, the sweep's retry) takes the sandbox's own lock
and then waits for its background clean-up, if any (the deletion of an instance a cancelled
StartVM left behind, or the recovery of a StartVM interrupted by a restart). Each step
performed is reported to the state table, and the record follows the state: what exists
(instance, tunnel, VXLAN id) is written down before the call returns, and what could not be
removed stays recorded (``stop-failed``) until a StopVM or the sweep removes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import AsyncIterator
from typing import Any

from adaptor.errors import ForwarderUnreachable, SandboxNotFound, StartFailed, StopFailed
from adaptor.lifecycle import describe, shielded
from adaptor.proxy import AgentProxy
from adaptor.proxy.dialer import DialTimeout
from adaptor.record import (
    APF_COPY_NAME,
    SOCKET_NAME,
    SandboxRecord,
    request_fingerprint,
)
from adaptor.sandboxcore import SandboxCore
from adaptor.states import Event, SandboxState
from providers.base import (
    NODE_TAG,
    SANDBOX_TAG,
    Instance,
    InstanceRequest,
    ProviderError,
    adaptor_tags,
)

__all__ = ["APF_COPY_NAME", "SOCKET_NAME", "Sandbox", "SandboxRecord", "SandboxState",
           "request_fingerprint"]

log = logging.getLogger("adaptor.manager")

START_LOCK_POLL = 0.2
RECOVER_LOCK_POLL = 0.5


class Sandbox(SandboxCore):
    # ------------------------------------------------------------------ StartVM
    async def start(self) -> None:
        task = asyncio.current_task()
        async with self.lock:
            await self._wait_cleanup()
            if self.gone:
                raise SandboxNotFound(self.id, "getting sandbox")
            if self._state.phase is SandboxState.RUNNING and self.proxy is not None \
                    and self.proxy.ready:
                log.info("sandbox=%s: StartVM of a running sandbox; nothing to do", self.id)
                return
            if self._state.phase in (SandboxState.STOP_FAILED, SandboxState.STOPPING):
                raise StartFailed(self._being_stopped())
            self._starting = task
            try:
                async with self._start_lock() as waited:
                    if waited and self._reload():
                        await self._resume()
                        return
                    if self._state.phase is SandboxState.STARTING:
                        # Left by a StartVM that died with its process (or whose recovery
                        # failed): remove what it made first.
                        log.warning("sandbox=%s: its previous StartVM was interrupted; "
                                    "cleaning up so that this one starts afresh", self.id)
                        await self._abandon_start()
                    if self._state.phase is SandboxState.STOP_FAILED:
                        raise StartFailed(self._being_stopped())
                    await self._start()
            finally:
                if self._starting is task:
                    self._starting = None

    def cancel_start(self) -> asyncio.Task[Any] | None:
        """Cancel the StartVM in progress, if any; the task, to wait for its clean-up."""
        task = self._starting
        if task is None or task.done():
            return None
        task.cancel()
        return task

    def _being_stopped(self) -> str:
        if self._state.phase is SandboxState.STOPPING:  # a StopVM was interrupted
            return f"sandbox {self.id} is being stopped"
        if self._record.instance_id:
            return (f"sandbox {self.id} is being stopped: its instance "
                    f"{self._record.instance_id} could not be deleted yet")
        return f"sandbox {self.id} is being stopped: its tunnel could not be removed yet"

    @contextlib.asynccontextmanager
    async def _start_lock(self) -> AsyncIterator[bool]:
        """Hold the sandbox's start lock file; yields True if another process held it first
        (a rolling update: the old adaptor is finishing a StartVM)."""
        store = self._ctx.store
        if store is None:
            yield False
            return
        waited = False
        while (fd := store.try_start_lock(self.id)) is None:
            if not waited:
                log.info("sandbox=%s: another adaptor process is starting this sandbox; "
                         "waiting for it", self.id)
            waited = True
            await asyncio.sleep(START_LOCK_POLL)
        try:
            yield waited
        finally:
            store.release_start_lock(fd)

    def _reload(self) -> bool:
        """Read the record the other process left; True when it left the sandbox running."""
        record = self._ctx.store.load(self.id) if self._ctx.store is not None else None
        if record is None:
            self._step(Event.FORGET, save=False)
            raise SandboxNotFound(self.id, "getting sandbox")
        self._adopt(record)
        return record.state is SandboxState.RUNNING

    async def _start(self) -> None:
        if self.proxy is not None:  # a proxy that lost its forwarder: start afresh
            await self._close_proxy()
        if self._state.holds.instance:
            # Running instance without a proxy (e.g. the proxy was lost): reconnect only.
            instance = Instance(id=self._record.instance_id, name=self._record.instance_name,
                                ips=tuple(ipaddress.ip_address(ip)
                                          for ip in self._record.instance_ips))
            self._step(Event.START, save=False)
        else:
            instance = await self._new_instance()
        proxy: AgentProxy | None = None
        try:
            if not instance.ips:
                raise StartFailed("instance IP is not available")
            if not self._state.holds.tunnel:
                await self._ctx.network.setup(self.id, self._record.netns_path,
                                              self._pod_network(), instance.ips)
                self._step(Event.TUNNEL_UP, save=False)
            proxy = self._make_proxy(str(instance.ips[0]))
            try:
                await proxy.start()
            except DialTimeout as exc:
                raise ForwarderUnreachable(str(exc)) from None
        except BaseException as exc:
            # A cancellation is the caller leaving or a StopVM, not a failure of ours.
            level = logging.WARNING if isinstance(exc, asyncio.CancelledError) else logging.ERROR
            log.log(level, "sandbox=%s: StartVM failed, cleaning up instance %s: %s",
                    self.id, instance.id, describe(exc))
            await shielded(self._undo_start())
            raise
        self.proxy = proxy
        self._step(Event.PROXY_UP)
        log.info("sandbox=%s: pod VM %s is ready", self.id, instance.id)

    async def _new_instance(self) -> Instance:
        self._step(Event.START)
        try:
            instance = await self._create_instance()
        except BaseException:
            self._step(Event.SETTLE)
            raise
        self._step(Event.INSTANCE_CREATED, instance_id=instance.id,
                   instance_ips=tuple(str(ip) for ip in instance.ips),
                   peerpod=self._own_peerpod(instance.id))
        log.info("sandbox=%s: instance %s (%s) created, ips %s", self.id, instance.id,
                 instance.name, ",".join(self._record.instance_ips) or "-")
        return instance

    def _own_peerpod(self, instance_id: str) -> str:
        """Name (and create, in the background) the PeerPod of a new instance."""
        objects, record = self._ctx.pod_objects, self._record
        if objects is None:
            return ""
        return objects.instance_created(record.pod_namespace, record.pod_name, instance_id)

    def _release_peerpod(self) -> dict[str, str]:
        """Record changes once the recorded instance is deleted: its PeerPod goes too."""
        name = self._record.peerpod
        if not name:
            return {}
        if self._ctx.pod_objects is not None:
            self._ctx.pod_objects.instance_deleted(self._record.pod_namespace, name)
        return {"peerpod": ""}

    async def _create_instance(self) -> Instance:
        record = self._record
        request = InstanceRequest(
            name=record.instance_name,
            sandbox_id=self.id,
            pod_name=record.pod_name,
            pod_namespace=record.pod_namespace,
            user_data=record.user_data.encode(),
            spec=self._ctx.select_instance_type(self.id, record.spec),
            tags=adaptor_tags(self._ctx.config.node_name, self.id, record.pod_name,
                              record.pod_namespace),
            attempt=record.attempt,
        )
        task = asyncio.ensure_future(self._ctx.provider.create_instance(request))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            # The caller gave up (deadline, closed connection, StopVM): whatever the provider
            # creates from here on must not outlive this call.
            log.warning("sandbox=%s: StartVM cancelled while creating instance %s; it will be "
                        "deleted once created", self.id, record.instance_name)
            self._cleanup = asyncio.ensure_future(self._reap(task))
            raise
        except ProviderError as exc:
            raise StartFailed(f"creating an instance : {exc}") from exc

    async def _reap(self, task: asyncio.Future[Instance]) -> None:
        try:
            instance = await task
        except Exception as exc:
            log.info("sandbox=%s: abandoned instance creation failed: %s", self.id, exc)
            return
        try:
            await self._ctx.delete_instance(self.id, instance.id)
        except ProviderError as exc:
            log.error("sandbox=%s: could not delete abandoned instance %s: %s",
                      self.id, instance.id, exc)
            if not self.gone:
                self._step(Event.INSTANCE_LEFT, instance_id=instance.id,
                           instance_ips=tuple(str(ip) for ip in instance.ips))
            return
        if not self.gone:
            self._record = self._record.replace(attempt=self._record.attempt + 1)
            self.save()

    async def _undo_start(self) -> None:
        await self._close_proxy()
        if self._state.holds.tunnel:
            await self._teardown()
        instance_id = self._record.instance_id
        if self._state.holds.instance:
            try:
                await self._ctx.delete_instance(self.id, instance_id)
            except ProviderError as exc:
                log.error("sandbox=%s: instance %s could not be deleted; keeping the record so "
                          "StopVM can retry: %s", self.id, instance_id, exc)
            else:
                self._step(Event.INSTANCE_DELETED, save=False, **self._release_peerpod())
        self._step(Event.SETTLE)

    def recover(self) -> None:
        """A ``starting`` record after a restart: its StartVM died with its adaptor. In the
        background (the sandbox's calls wait for it): if another adaptor still holds the
        start lock (rolling update), wait for it and take over what it left; otherwise
        delete whatever instance the StartVM may have created and go back to ``created``,
        so that a retry makes exactly one VM."""
        self._cleanup = asyncio.ensure_future(self._recover())

    async def _recover(self) -> None:
        store = self._ctx.store
        try:
            if store is not None and store.start_lock_held(self.id):
                log.info("sandbox=%s: another adaptor process is still starting it; waiting",
                         self.id)
                while store.start_lock_held(self.id):  # noqa: ASYNC110 - held elsewhere
                    await asyncio.sleep(RECOVER_LOCK_POLL)
                fresh = store.load(self.id)
                if fresh is None:
                    self._step(Event.FORGET, save=False)
                    return
                self._adopt(fresh)
                if fresh.state is SandboxState.RUNNING:
                    await self._resume()
                    return
                if fresh.state is not SandboxState.STARTING:
                    return
            log.warning("sandbox=%s: its StartVM was interrupted by an adaptor restart; "
                        "cleaning up so that a retry starts afresh", self.id)
            await self._abandon_start()
        except Exception:
            log.exception("sandbox=%s: recovering the interrupted StartVM failed", self.id)

    async def _abandon_start(self) -> None:
        """Delete the recorded instance and any other tagged with this sandbox."""
        node = self._ctx.config.node_name
        recorded_id = self._record.instance_id
        ids = [recorded_id] if recorded_id else []
        try:
            found = await self._ctx.provider.list_instances({NODE_TAG: node, SANDBOX_TAG: self.id})
        except ProviderError as exc:
            log.warning("sandbox=%s: cannot list its instances (the orphan sweep will find "
                        "them later): %s", self.id, exc)
            found = []
        ids += [i.id for i in found if i.tags.get(NODE_TAG) == node and i.id not in ids]
        if self._state.holds.tunnel:
            await self._teardown()
        for instance_id in ids:
            log.info("sandbox=%s instance=%s: deleting the instance of an interrupted StartVM",
                     self.id, instance_id)
            try:
                await self._ctx.delete_instance(self.id, instance_id)
            except ProviderError as exc:
                log.error("sandbox=%s instance=%s: could not delete it; the sweep retries: %s",
                          self.id, instance_id, exc)
                if instance_id != recorded_id:
                    self._step(Event.INSTANCE_CREATED, save=False, instance_id=instance_id,
                               instance_ips=())
                break
            if instance_id == recorded_id:
                self._step(Event.INSTANCE_DELETED, save=False, **self._release_peerpod())
            else:
                self._record = self._record.replace(attempt=self._record.attempt + 1)
        self._step(Event.SETTLE)

    # ------------------------------------------------------------------ StopVM
    async def stop(self) -> bool:
        """StopVM: True when the sandbox is gone, False when something is left to retry
        (a tunnel teardown that failed). Raises :class:`StopFailed` when the instance could
        not be deleted."""
        async with self.lock:
            await self._wait_cleanup()
            if self.gone:
                log.warning("sandbox=%s: StopVM for an unknown sandbox; nothing to stop",
                            self.id)
                return True
            return await self._stop()

    async def retry_stop(self) -> bool:
        """The sweep's retry of a stop that failed; as :meth:`stop`."""
        return await self.stop()

    async def _stop(self) -> bool:
        self._step(Event.STOP, save=False)
        await self._close_proxy()
        instance_id = self._record.instance_id
        if self._state.holds.instance:
            try:
                await self._ctx.delete_instance(self.id, instance_id)
            except ProviderError as exc:
                self._step(Event.SETTLE)
                raise StopFailed(
                    f"stopping VM: deleting instance {instance_id} failed after "
                    f"{self._ctx.config.delete_retry.attempts} attempts: {exc}; the sandbox "
                    "is kept so that StopVM can be retried"
                ) from exc
            self._step(Event.INSTANCE_DELETED, save=False, **self._release_peerpod())
        if self._state.holds.tunnel and not await self._teardown():
            self._step(Event.SETTLE)
            log.warning("sandbox=%s: stopped, but its tunnel is kept recorded for a retry "
                        "(VXLAN id %d stays reserved)", self.id, self._record.vxlan_id)
            return False
        self._ctx.network.release(self.id)
        self._step(Event.VXLAN_RELEASED, save=False)
        if self._ctx.store is not None:
            self._ctx.store.delete(self.id)
        self._step(Event.SETTLE, save=False)
        log.info("sandbox=%s: stopped", self.id)
        return True
