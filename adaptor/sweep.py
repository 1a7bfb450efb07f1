"""The orphan sweep: delete pod VMs this node created but no sandbox record accounts for.

At startup and every ``ORPHAN_SWEEP_INTERVAL``, the provider lists the instances tagged with
this node's name. An instance is an orphan when no record (on disk or in memory) names its
sandbox, or the record names another instance id. Orphans older than
``ORPHAN_GRACE_PERIOD`` are deleted (an instance whose age the cloud does not report counts
as old). Left alone: instances whose node tag is not exactly this node (whatever the
provider's filter returned), younger instances, and the instance of a sandbox whose StartVM
is creating it right now. The sweep also retries the deletes of ``stop-failed`` sandboxes.

Only the adaptor that owns the hypervisor socket sweeps: during a rolling update the old one
stops sweeping as soon as the new one has taken the socket over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from adaptor.errors import StopFailed
from adaptor.manager import SandboxManager
from adaptor.metrics import Metrics
from adaptor.sandbox import SandboxRecord, SandboxState
from adaptor.store import SandboxStore
from providers.base import NODE_TAG, SANDBOX_TAG, Instance, Provider, ProviderError

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


@dataclass(frozen=True, slots=True)
class SweepResult:
    deleted: tuple[str, ...] = ()
    too_young: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    stops_retried: tuple[str, ...] = ()
    skipped: bool = False


class OrphanSweeper:
    def __init__(
        self,
        provider: Provider,
        manager: SandboxManager,
        store: SandboxStore | None,
        *,
        node_name: str,
        grace: timedelta,
        interval: timedelta,
        metrics: Metrics | None = None,
        is_owner: Callable[[], bool] = lambda: True,
        clock: Clock = lambda: datetime.now(UTC),
    ) -> None:
        if not node_name:
            raise ValueError("the orphan sweep needs a node name")
        self._provider = provider
        self._manager = manager
        self._store = store
        self._node = node_name
        self._grace = grace
        self._interval = interval
        self._metrics = metrics
        self._is_owner = is_owner
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def start(self) -> None:
        """Sweep now, then every interval, in a background task owned by this object."""
        if self._interval.total_seconds() <= 0:
            log.info("orphan sweep disabled (ORPHAN_SWEEP_INTERVAL=0)")
            return
        self._task = asyncio.create_task(self._loop())

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception("orphan sweep failed unexpectedly")
            await asyncio.sleep(self._interval.total_seconds())

    async def sweep(self) -> SweepResult:
        async with self._lock:
            return await self._sweep()

    async def _sweep(self) -> SweepResult:
        if not self._is_owner():
            log.info("orphan sweep skipped: another adaptor owns the hypervisor socket now")
            self._count("skipped")
            return SweepResult(skipped=True)
        try:
            instances = await self._provider.list_instances({NODE_TAG: self._node})
        except ProviderError as exc:
            log.warning("orphan sweep: listing the instances of node %s failed: %s",
                        self._node, exc)
            self._count("error")
            return SweepResult()
        known = self._known()
        now = self._clock()
        deleted: list[str] = []
        young: list[str] = []
        failed: list[str] = []
        for instance in instances:
            if instance.tags.get(NODE_TAG) != self._node:
                continue  # never touch another node's (or cluster's) instances
            sid = instance.tags.get(SANDBOX_TAG, "")
            record = known.get(sid)
            if record is not None and _accounted_for(record, instance):
                continue
            age = now - instance.created_at if instance.created_at is not None else None
            if age is not None and age < self._grace:
                young.append(instance.id)
                continue
            why = "no sandbox record" if record is None else (
                f"its sandbox record names instance {record.instance_id or '(none)'}")
            log.warning("sandbox=%s instance=%s: deleting orphan instance %s (%s, age %s)",
                        sid or "-", instance.id, instance.name, why,
                        _age(age))
            try:
                await self._provider.delete_instance(instance.id)
            except ProviderError as exc:
                log.error("sandbox=%s instance=%s: deleting the orphan failed; the next sweep "
                          "retries: %s", sid or "-", instance.id, exc)
                failed.append(instance.id)
                continue
            deleted.append(instance.id)
            if self._metrics is not None:
                self._metrics.sweep_deletions.inc()
        retried = await self._retry_failed_stops()
        self._count("ok" if not failed else "partial")
        if deleted or failed:
            log.info("orphan sweep: %d deleted, %d failed, %d younger than %s kept",
                     len(deleted), len(failed), len(young), self._grace)
        return SweepResult(tuple(deleted), tuple(young), tuple(failed), retried)

    def _known(self) -> dict[str, SandboxRecord]:
        known: dict[str, SandboxRecord] = {}
        if self._store is not None:
            # The disk is shared with any other adaptor on this node (rolling update).
            known.update((r.sandbox_id, r) for r in self._store.load_all().records)
        known.update((r.sandbox_id, r) for r in self._manager.records())
        return known

    async def _retry_failed_stops(self) -> tuple[str, ...]:
        retried: list[str] = []
        for record in self._manager.records():
            if record.state is not SandboxState.STOP_FAILED:
                continue
            sid = record.sandbox_id
            log.info("sandbox=%s instance=%s: retrying the delete that failed earlier", sid,
                     record.instance_id)
            try:
                await self._manager.stop(sid)
            except StopFailed as exc:
                log.error("sandbox=%s instance=%s: still cannot delete it: %s", sid,
                          record.instance_id, exc)
                continue
            retried.append(sid)
        return tuple(retried)

    def _count(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.sweeps.labels(result).inc()


def _accounted_for(record: SandboxRecord, instance: Instance) -> bool:
    if record.instance_id == instance.id:
        return True
    # A StartVM is creating it right now: the record gets the id when the call returns.
    return record.state is SandboxState.STARTING and not record.instance_id


def _age(age: timedelta | None) -> str:
    return "unknown" if age is None else f"{int(age.total_seconds())}s"
