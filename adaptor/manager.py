"""The sandbox manager: a registry of :class:`~adaptor.sandbox.Sandbox` objects behind the
ttrpc service's CreateVM, StartVM, StopVM and GetInfo.

Guarantees:
- Sandbox ids match ``[0-9A-Za-z_-]{1,128}`` (the Kata shim's are 64 hex characters);
  anything else is refused, so that no id names a path outside the pods dir.
- At most one instance per sandbox id. Calls for one id are serialised by its sandbox; a
  repeated identical CreateVM returns the same socket path (a different one is
  ``sandbox <id> already exists``); StartVM of a running sandbox reuses its instance; a
  StartVM cancelled while the provider is creating the instance lets the creation finish in
  the background and deletes the result, and later calls for that id wait for that clean-up.
- Any StartVM failure after the instance exists deletes it (shielded from cancellation) and
  undoes the tunnel. What cannot be removed stays recorded (state ``stop-failed``), so that
  a StopVM or the sweep retries it.
- StopVM is idempotent: an unknown id (never created, already stopped, or lost in a restart)
  is logged and succeeds. A StopVM that arrives while StartVM is still running cancels it.
  When the delete keeps failing StopVM reports it and keeps the record; when the tunnel
  teardown fails StopVM succeeds and the tunnel stays recorded for the sweep.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from adaptor.builder import AuthSource, SandboxBuilder
from adaptor.errors import InvalidRequest, SandboxExists, SandboxNotFound
from adaptor.lifecycle import ManagerConfig, RetryPolicy, SandboxContext
from adaptor.network.base import WorkerNetwork
from adaptor.proxy import AgentProxy
from adaptor.record import SandboxRecord, request_fingerprint
from adaptor.sandbox import Sandbox
from adaptor.states import RECORDED, recorded
from adaptor.store import SandboxStore
from adaptor.tls import AgentTLS
from providers.base import InstanceTypeCatalogue, Provider

if TYPE_CHECKING:
    from adaptor.metrics import Metrics

__all__ = ["ManagerConfig", "RetryPolicy", "SandboxManager", "check_sandbox_id"]

log = logging.getLogger(__name__)

# How long shutdown waits for cancelled StartVMs to delete the instances they created.
START_CLEANUP_TIMEOUT = 30.0

SANDBOX_ID = re.compile(r"[0-9A-Za-z_-]{1,128}")


def check_sandbox_id(sandbox_id: str) -> None:
    """Refuse an id that could name anything but one directory inside the pods dir."""
    if not sandbox_id:
        raise InvalidRequest("empty sandbox id")
    if not SANDBOX_ID.fullmatch(sandbox_id):
        raise InvalidRequest(f"invalid sandbox id {sandbox_id[:140]!r}: expected 1 to 128 "
                             "characters from [0-9A-Za-z_-]")


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
        self._ctx = SandboxContext(config, provider, network, tls, store, metrics, catalogue)
        self._builder = SandboxBuilder(config.pods_dir, config.node_name,
                                       enable_scratch_space=config.enable_scratch_space,
                                       ext_network_via_podvm=config.ext_network_via_podvm,
                                       default_initdata=config.default_initdata,
                                       network=network, tls=tls,
                                       auth_source=auth_source,
                                       direct_volumes_dir=config.direct_volumes_dir)
        self._sandboxes: dict[str, Sandbox] = {}
        self._building: dict[str, asyncio.Future[None]] = {}
        self._changed = asyncio.Event()
        self.info_waiters = 0  # GetInfo calls waiting for an instance id

    # ------------------------------------------------------------------ registry
    def sandbox(self, sandbox_id: str) -> Sandbox | None:
        return self._sandboxes.get(sandbox_id)

    def sandboxes(self) -> list[Sandbox]:
        return list(self._sandboxes.values())

    def record(self, sandbox_id: str) -> SandboxRecord | None:
        sandbox = self._sandboxes.get(sandbox_id)
        return sandbox.record if sandbox is not None else None

    def records(self) -> list[SandboxRecord]:
        return [sandbox.record for sandbox in self._sandboxes.values()]

    def proxy(self, sandbox_id: str) -> AgentProxy | None:
        sandbox = self._sandboxes.get(sandbox_id)
        return sandbox.proxy if sandbox is not None else None

    def adopt(self, record: SandboxRecord) -> Sandbox:
        """Register a sandbox loaded from the store (nothing is written)."""
        sandbox = self._sandboxes[record.sandbox_id] = Sandbox(self._ctx, record,
                                                               self._changed_state)
        return sandbox

    def _changed_state(self, sandbox: Sandbox) -> None:
        if sandbox.gone and self._sandboxes.get(sandbox.id) is sandbox:
            del self._sandboxes[sandbox.id]
        self._changed.set()
        self._changed = asyncio.Event()

    def counts_by_state(self) -> dict[str, float]:
        counts = {state.value: 0.0 for state in RECORDED}
        for sandbox in self._sandboxes.values():
            counts[recorded(sandbox.state.phase).value] += 1
        return counts

    def forwarder_connections(self) -> dict[str, float]:
        return {"": float(sum(1 for s in self._sandboxes.values()
                              if s.proxy is not None and s.proxy.upstream_connected))}

    async def _settled(self, sandbox_id: str) -> Sandbox | None:
        """The live sandbox of this id, once any CreateVM building it has finished."""
        while (building := self._building.get(sandbox_id)) is not None:
            await asyncio.shield(building)
        return self._sandboxes.get(sandbox_id)

    # ------------------------------------------------------------------ CreateVM
    async def create(
        self, sandbox_id: str, annotations: Mapping[str, str], netns_path: str
    ) -> str:
        check_sandbox_id(sandbox_id)
        fingerprint = request_fingerprint(sandbox_id, annotations, netns_path)
        while (existing := await self._settled(sandbox_id)) is not None:
            async with existing.lock:
                if not existing.gone:
                    if existing.record.fingerprint != fingerprint:
                        raise SandboxExists(sandbox_id)
                    log.info("sandbox=%s: repeated CreateVM, returning the same agent socket",
                             sandbox_id)
                    return existing.record.socket_path
        building = self._building[sandbox_id] = asyncio.get_running_loop().create_future()
        try:
            record = await self._builder.build(sandbox_id, annotations, netns_path, fingerprint)
            sandbox = Sandbox(self._ctx, record, self._changed_state)
            sandbox.save()
            self._sandboxes[sandbox_id] = sandbox
            self._changed_state(sandbox)
        finally:
            del self._building[sandbox_id]
            building.set_result(None)
        log.info(
            "create a sandbox %s for pod %s in namespace %s (netns: %s)",
            sandbox_id, record.pod_name, record.pod_namespace, netns_path,
        )
        return record.socket_path

    # ------------------------------------------------------------------ StartVM
    async def start(self, sandbox_id: str) -> None:
        check_sandbox_id(sandbox_id)
        sandbox = await self._settled(sandbox_id)
        if sandbox is None:
            raise SandboxNotFound(sandbox_id, "getting sandbox")
        await sandbox.start()

    # ------------------------------------------------------------------ StopVM
    async def stop(self, sandbox_id: str) -> None:
        check_sandbox_id(sandbox_id)
        sandbox = await self._settled(sandbox_id)
        if sandbox is None:
            log.warning("sandbox=%s: StopVM for an unknown sandbox; nothing to stop",
                        sandbox_id)
            return
        if sandbox.cancel_start() is not None:
            log.info("sandbox=%s: StopVM cancels the StartVM in progress", sandbox_id)
        await sandbox.stop()

    # ------------------------------------------------------------------ GetInfo
    def _instance_of(self, pod_namespace: str, pod_name: str) -> str | None:
        """The pod's instance id, "" while its sandbox has none, ``None`` with no sandbox."""
        found: str | None = None
        for sandbox in self._sandboxes.values():
            record = sandbox.record
            if (record.pod_name, record.pod_namespace) == (pod_name, pod_namespace):
                if record.instance_id:
                    return record.instance_id
                found = ""
        return found

    async def instance_id(
        self, pod_namespace: str, pod_name: str, wait: bool, timeout: float | None
    ) -> str:
        """The instance id of a pod ("" when none). With ``wait``, block only until the pod
        has a sandbox, as upstream's ``cloudService.GetInstanceID`` (cloud.go) does: a sandbox
        without an instance yet answers "" at once."""
        if wait:
            self.info_waiters += 1
            try:
                async with asyncio.timeout(timeout):
                    while self._instance_of(pod_namespace, pod_name) is None:
                        await self._changed.wait()
            finally:
                self.info_waiters -= 1
        return self._instance_of(pod_namespace, pod_name) or ""

    # ------------------------------------------------------------------ lifecycle
    async def aclose(self) -> None:
        """Stop the proxies (pod VMs keep running) and wait for background clean-ups."""
        sandboxes = list(self._sandboxes.values())
        starting = [task for s in sandboxes if (task := s.cancel_start()) is not None]
        if starting:
            # Each cancelled StartVM deletes the instance it created before it ends; wait for
            # that (bounded): a record left in "starting" is cleaned at the next start anyway.
            await asyncio.wait(starting, timeout=START_CLEANUP_TIMEOUT)
        for sandbox in sandboxes:
            await sandbox.close_proxy()
        await asyncio.gather(*(s.wait_cleanup() for s in sandboxes))

