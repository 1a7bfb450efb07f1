"""Startup after a restart (or a rolling update): take the sandboxes back from the store.

- Every record is reloaded into a :class:`~adaptor.sandbox.Sandbox`; its VXLAN id is marked
  in use again, so a new sandbox never gets an id a live pod (or a tunnel still waiting for
  its teardown) has.
- ``running`` sandboxes get their agent socket back at once; the forwarder connection is
  made again in the background (calls wait for it).
- ``starting`` records belong to a StartVM that failed from the shim's point of view, because
  its daemon went away: each such sandbox recovers in the background
  (:meth:`Sandbox.recover`), and its calls wait for that.
- ``created`` and ``stop-failed`` records are kept as they are (the orphan sweep retries
  what the latter still hold).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from adaptor.manager import SandboxManager
from adaptor.network.base import WorkerNetwork
from adaptor.states import SandboxState
from adaptor.store import SandboxStore

log = logging.getLogger(__name__)


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
    sandboxes = []
    for record in loaded.records:
        if record.pod_network is not None:
            try:
                network.restore(record.sandbox_id, record.pod_network)
            except ValueError as exc:
                log.error("sandbox=%s: cannot restore its pod network: %s",
                          record.sandbox_id, exc)
        sandboxes.append(manager.adopt(record))
    running = [s for s in sandboxes if s.state.phase is SandboxState.RUNNING]
    results = await asyncio.gather(*(s.resume() for s in running), return_exceptions=True)
    resumed = 0
    for sandbox, result in zip(running, results, strict=True):
        if isinstance(result, BaseException):
            log.error("sandbox=%s instance=%s: cannot serve its agent socket again: %s",
                      sandbox.id, sandbox.record.instance_id, result)
        else:
            resumed += 1
    interrupted = [s for s in sandboxes if s.state.phase is SandboxState.STARTING]
    for sandbox in interrupted:
        sandbox.recover()
    report = RestoreReport(len(loaded.records), resumed, len(interrupted), len(loaded.corrupt))
    log.info("restored %d sandbox record(s): %d agent proxies serving again, %d interrupted "
             "StartVM(s) to clean up, %d unreadable record(s) set aside", report.records,
             report.resumed, report.interrupted, report.corrupt)
    return report
