"""peerpod-ctrl's reconciler (upstream: ``src/peerpod-ctrl/controllers/peerpod_controller.go``).

Watches PeerPods in every namespace and keeps the latest of each in a cache. For each one:
- being deleted (``deletionTimestamp`` set) while ``peer.pod/finalizer`` is still there (its
  node or its adaptor went away before the adaptor released it): delete the instance through
  the provider named in ``spec.cloudProvider`` (a missing instance is fine), then remove the
  finalizer with an update carrying the resourceVersion read (a 409 re-reads and retries),
  after which the API server deletes the object;
- live: delete the older PeerPods whose controller owner is the same Pod uid (a pod whose
  VM was re-created leaves one behind).
Failures are retried per object with backoff; the list and the watch are opened again
whenever the watch breaks.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from collections.abc import Callable
from typing import Any

from lightkube import AsyncClient

from k8s.access import DEFAULT_BACKOFF, Backoff, KubeError, translate
from k8s.objects import FINALIZER, PeerPod
from providers.base import InstanceNotFound, Provider, ProviderError

log = logging.getLogger(__name__)

Key = tuple[str, str]
ProviderFactory = Callable[[str], Provider]


def _key(obj: dict[str, Any]) -> Key:
    meta = obj["metadata"]
    return meta.get("namespace", ""), meta["name"]


def owner_uid(obj: dict[str, Any]) -> str:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid", ""))
    return ""


def older_siblings(obj: dict[str, Any], others: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """PeerPods owned by the same Pod and created before ``obj`` (upstream isOldPeerPod)."""
    owner, meta = owner_uid(obj), obj["metadata"]
    if not owner:
        return []
    return [o for o in others if owner_uid(o) == owner
            and o["metadata"].get("uid") != meta.get("uid")
            and o["metadata"].get("creationTimestamp", "") < meta.get("creationTimestamp", "")
            and not o["metadata"].get("deletionTimestamp")]


class PeerPodController:
    def __init__(self, client: AsyncClient, providers: ProviderFactory, *,
                 backoff: Backoff = DEFAULT_BACKOFF) -> None:
        self._client = client
        self._providers = providers
        self._made: dict[str, Provider] = {}
        self._backoff = backoff
        self._cache: dict[Key, dict[str, Any]] = {}
        self._workers: dict[Key, asyncio.Task[None]] = {}
        self._dirty: set[Key] = set()
        self.watching = asyncio.Event()

    # ---------------------------------------------------------------- watch
    async def run(self) -> None:
        """Watch until cancelled."""
        delays = self._backoff.delays()
        while True:
            try:
                with translate("list PeerPods"):
                    async for res in self._client.list(PeerPod, namespace="*"):
                        self._event("ADDED", res.to_dict())
                self.watching.set()
                delays = self._backoff.delays()
                with translate("watch PeerPods"):
                    # Without a resourceVersion the watch starts with every object again
                    # (ADDED), so nothing changed between the list and the watch is missed.
                    async for event, res in self._client.watch(PeerPod, namespace="*"):
                        self._event(event, res.to_dict())
                    raise KubeError("watch PeerPods: stream ended")
            except KubeError as exc:
                self.watching.clear()
                delay = next(delays)
                log.warning("%s; watching again in %.1fs", exc, delay)
                await asyncio.sleep(delay)

    def _event(self, event: str, obj: dict[str, Any]) -> None:
        key = _key(obj)
        if event == "DELETED":
            self._cache.pop(key, None)
            return
        self._cache[key] = obj
        task = self._workers.get(key)
        if task is not None and not task.done():
            self._dirty.add(key)
            return
        self._workers[key] = asyncio.create_task(self._work(key), name=f"peerpod-{key[1]}")

    async def _work(self, key: Key) -> None:
        delays = self._backoff.delays()
        while True:
            self._dirty.discard(key)
            obj = self._cache.get(key)
            if obj is None:
                return
            try:
                await self.reconcile(obj)
            except (KubeError, ProviderError) as exc:
                delay = next(delays)
                log.warning("PeerPod %s/%s: %s; retrying in %.1fs", *key, exc, delay)
                await asyncio.sleep(delay)
                continue
            if key not in self._dirty:
                return

    async def aclose(self) -> None:
        for task in self._workers.values():
            task.cancel()
        await asyncio.gather(*self._workers.values(), return_exceptions=True)
        for provider in self._made.values():
            with contextlib.suppress(Exception):
                await provider.aclose()

    # ---------------------------------------------------------------- reconcile
    async def reconcile(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        if not meta.get("deletionTimestamp"):
            for old in older_siblings(obj, list(self._cache.values())):
                ns, name = _key(old)
                log.info("PeerPod %s/%s: older than %s for the same pod; deleting it",
                         ns, name, meta["name"])
                with contextlib.suppress(KubeError), translate(f"delete PeerPod {ns}/{name}"):
                    await self._client.delete(PeerPod, name, namespace=ns)
            return
        if FINALIZER not in (meta.get("finalizers") or []):
            return
        await self._delete_instance(obj)
        await self._remove_finalizer(obj)

    async def _delete_instance(self, obj: dict[str, Any]) -> None:
        spec, (ns, name) = obj.get("spec") or {}, _key(obj)
        cloud, instance_id = spec.get("cloudProvider", ""), spec.get("instanceID", "")
        log.info("PeerPod %s/%s: deleting instance %s (provider %s)", ns, name,
                 instance_id or "-", cloud)
        if not instance_id:
            return
        provider = self._made.get(cloud)
        if provider is None:
            provider = self._made[cloud] = self._providers(cloud)
        try:
            await provider.delete_instance(instance_id)
        except InstanceNotFound:
            pass
        log.info("PeerPod %s/%s: instance %s deleted", ns, name, instance_id)

    async def _remove_finalizer(self, obj: dict[str, Any]) -> None:
        ns, name = _key(obj)
        obj = copy.deepcopy(obj)  # the cached object stays as the API server sent it
        while True:
            meta = obj["metadata"]
            meta["finalizers"] = [f for f in meta.get("finalizers") or [] if f != FINALIZER]
            try:
                with translate(f"update PeerPod {ns}/{name}"):
                    await self._client.replace(PeerPod.from_dict(obj))
                return
            except KubeError as exc:
                if exc.not_found:
                    return
                if not exc.conflict:
                    raise
            log.info("PeerPod %s/%s: changed meanwhile (409); reading it again", ns, name)
            try:
                with translate(f"get PeerPod {ns}/{name}"):
                    obj = (await self._client.get(PeerPod, name, namespace=ns)).to_dict()
            except KubeError as exc:
                if exc.not_found:
                    return
                raise
            if FINALIZER not in (obj["metadata"].get("finalizers") or []):
                return
