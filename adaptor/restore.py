"""Startup after a restart (or a rolling update): take the sandboxes back from the store.

- Every record is reloaded; its VXLAN id is marked in use again, so a new sandbox never gets
  an id a live pod still has.
- ``running`` sandboxes get their agent socket back at once; the forwarder connection is
  made again in the background (calls wait for it).
- ``starting`` records belong to a StartVM that failed from the shim's point of view, because
  its daemon went away. If its start lock is free (the daemon died), the instance it may have
  created is deleted and the record goes back to ``created``: a retried StartVM makes exactly
  one VM. If another adaptor still holds the lock (rolling update), the record is left to it
  and taken over once that adaptor lets go.
- ``created`` and ``stop-failed`` records are kept as they are (the orphan sweep retries
  the deletes of the latter).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from adaptor.manager import SandboxManager
from adaptor.network.base import WorkerNetwork
from adaptor.sandbox import SandboxRecord, SandboxState
from adaptor.store import SandboxStore
from protocols import apf

log = logging.getLogger(__name__)

LOCK_POLL = 0.5


@dataclass(frozen=True, slots=True)
class RestoreReport:
    records: int
    resumed: int
    interrupted: int
    corrupt: int


async def restore(
    manager: SandboxManager, store: SandboxStore, network: WorkerNetwork
) -> RestoreReport:
    loaded = store.load_all()
    for record in loaded.records:
        _restore_network(network, record)
        manager.adopt(record)
    running = [r for r in loaded.records if r.state is SandboxState.RUNNING]
    results = await asyncio.gather(*(manager.resume(r) for r in running),
                                   return_exceptions=True)
    resumed = 0
    for record, result in zip(running, results, strict=True):
        if isinstance(result, BaseException):
            log.error("sandbox=%s instance=%s: cannot serve its agent socket again: %s",
                      record.sandbox_id, record.instance_id, result)
        else:
            resumed += 1
    interrupted = [r for r in loaded.records if r.state is SandboxState.STARTING]
    for record in interrupted:
        lock = manager.lock(record.sandbox_id)
        await lock.acquire()  # uncontended: nothing is served yet
        manager.track(record.sandbox_id,
                      asyncio.create_task(_recover(manager, store, record, lock)))
    report = RestoreReport(len(loaded.records), resumed, len(interrupted), len(loaded.corrupt))
    log.info("restored %d sandbox record(s): %d agent proxies serving again, %d interrupted "
             "StartVM(s) to clean up, %d unreadable record(s) set aside", report.records,
             report.resumed, report.interrupted, report.corrupt)
    return report


def _restore_network(network: WorkerNetwork, record: SandboxRecord) -> None:
    try:
        pod_network = apf.loads(record.apf_json).pod_network
        if pod_network is not None:
            network.restore(record.sandbox_id, pod_network)
    except ValueError as exc:
        log.error("sandbox=%s: cannot restore its pod network: %s", record.sandbox_id, exc)


async def _recover(
    manager: SandboxManager, store: SandboxStore, record: SandboxRecord, lock: asyncio.Lock
) -> None:
    sid = record.sandbox_id
    try:
        if store.start_lock_held(sid):
            log.info("sandbox=%s: another adaptor process is still starting it; waiting", sid)
            while store.start_lock_held(sid):  # noqa: ASYNC110 - a lock file held elsewhere
                await asyncio.sleep(LOCK_POLL)
            fresh = store.load(sid)
            if fresh is None:
                manager.forget(sid)
                return
            manager.adopt(fresh)
            if fresh.state is SandboxState.RUNNING:
                await manager.resume(fresh)
                return
            if fresh.state is not SandboxState.STARTING:
                return
            record = fresh
        log.warning("sandbox=%s: its StartVM was interrupted by an adaptor restart; "
                    "cleaning up so that a retry starts afresh", sid)
        await manager.abandon_start(record)
    except Exception:
        log.exception("sandbox=%s: recovering the interrupted StartVM failed", sid)
    finally:
        lock.release()
