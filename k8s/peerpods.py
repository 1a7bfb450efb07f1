"""PeerPod objects of the adaptor: one per pod VM, so that the cluster knows which instance
belongs to which pod and peerpod-ctrl can delete it when the node or the adaptor is gone
(upstream: ``pkg/adaptor/k8sops/peerpod.go OwnPeerPod``, ``ReleasePeerPod``).

The sandbox names its PeerPod when the instance exists (:meth:`instance_created` returns the
name at once, and the sandbox records it); the object is created in the background: GET the
Pod for its uid, then POST the PeerPod with the finalizer and the Pod as controller owner.
After the instance is deleted, :meth:`instance_deleted` removes the finalizer in the
background (JSON patch ``remove /metadata/finalizers``, as upstream), after the create of the
same object, if it is still running, has finished. Both retry with backoff while the API
server is unreachable or answers 409/5xx. Because the name is kept in the sandbox record, a
restarted adaptor still releases the PeerPod of a sandbox it stops (upstream keeps the map
in memory and leaves the finalizer to peerpod-ctrl), and makes sure at startup that the
PeerPod of each restored sandbox exists (its create may not have got through).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

from lightkube import AsyncClient
from lightkube.resources.core_v1 import Pod
from lightkube.types import PatchType

from k8s.access import DEFAULT_BACKOFF, Backoff, KubeError, retry, translate
from k8s.objects import RELEASE_PATCH, PeerPod, peerpod_manifest, peerpod_name

log = logging.getLogger(__name__)

CLOSE_GRACE = 5.0


class PeerPodService:
    def __init__(self, client: AsyncClient, cloud_provider: str, *,
                 backoff: Backoff = DEFAULT_BACKOFF) -> None:
        self._client = client
        self._cloud_provider = cloud_provider
        self._backoff = backoff
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}

    def instance_created(self, pod_namespace: str, pod_name: str, instance_id: str) -> str:
        name = peerpod_name(pod_name)
        self._spawn(pod_namespace, name,
                    self._own(pod_namespace, pod_name, name, instance_id))
        return name

    def instance_restored(self, pod_namespace: str, pod_name: str, name: str,
                          instance_id: str) -> None:
        """A sandbox reloaded from its record after a restart: create its PeerPod if the
        previous adaptor could not (an existing one answers AlreadyExists, which is fine)."""
        self._spawn(pod_namespace, name,
                    self._own(pod_namespace, pod_name, name, instance_id))

    def instance_deleted(self, pod_namespace: str, name: str) -> None:
        before = self._tasks.get((pod_namespace, name))
        self._spawn(pod_namespace, name, self._release(pod_namespace, name, before))

    def _spawn(self, namespace: str, name: str, coro: Coroutine[Any, Any, None]) -> None:
        key = (namespace, name)
        task = asyncio.ensure_future(coro)
        self._tasks[key] = task

        def done(t: asyncio.Task[None]) -> None:
            if self._tasks.get(key) is t:
                del self._tasks[key]

        task.add_done_callback(done)

    async def wait_idle(self) -> None:
        """Wait for every create and release in flight (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def aclose(self, grace: float = CLOSE_GRACE) -> None:
        """Give creates and releases in flight ``grace`` seconds, then cancel them."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self.wait_idle()
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def _own(self, namespace: str, pod_name: str, name: str, instance_id: str) -> None:
        what = f"PeerPod {namespace}/{name} of instance {instance_id}"
        try:
            pod = await retry(f"{what}: get pod",
                              lambda: self._get_pod(namespace, pod_name), backoff=self._backoff)
            uid = pod.metadata.uid if pod.metadata is not None else None
            if not uid:
                raise KubeError(f"pod {namespace}/{pod_name} has no uid")
            manifest = peerpod_manifest(name=name, namespace=namespace, pod_name=pod_name,
                                        pod_uid=uid, cloud_provider=self._cloud_provider,
                                        instance_id=instance_id)
            await retry(f"{what}: create", lambda: self._create(manifest),
                        backoff=self._backoff)
        except KubeError as exc:
            log.error("%s: not created: %s", what, exc)
            return
        log.info("pod %s/%s is now owning PeerPod %s (instance %s)", namespace, pod_name,
                 name, instance_id)

    async def _get_pod(self, namespace: str, name: str) -> Pod:
        with translate(f"get pod {namespace}/{name}"):
            return await self._client.get(Pod, name, namespace=namespace)

    async def _create(self, manifest: dict[str, object]) -> None:
        try:
            with translate("create PeerPod"):
                await self._client.create(PeerPod.from_dict(manifest))
        except KubeError as exc:
            if exc.code == 409:  # AlreadyExists: an earlier attempt got through
                return
            raise

    async def _release(self, namespace: str, name: str,
                       before: asyncio.Task[None] | None) -> None:
        if before is not None:
            with contextlib.suppress(Exception):
                await before
        try:
            await retry(f"PeerPod {namespace}/{name}: release",
                        lambda: self._remove_finalizer(namespace, name), backoff=self._backoff)
        except KubeError as exc:
            log.error("PeerPod %s/%s: finalizer not removed (peerpod-ctrl will delete the "
                      "instance again when the pod goes): %s", namespace, name, exc)
            return
        log.info("PeerPod %s/%s released: it can now be deleted", namespace, name)

    async def _remove_finalizer(self, namespace: str, name: str) -> None:
        try:
            with translate(f"patch PeerPod {namespace}/{name}"):
                await self._client.patch(PeerPod, name, RELEASE_PATCH, namespace=namespace,
                                         patch_type=PatchType.JSON)
        except KubeError as exc:
            if exc.code in (404, 422):  # gone already, or its finalizers are
                return
            raise
