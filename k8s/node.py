"""The node's ``kata.peerpods.io/vm`` extended resource and its owner annotation
(upstream: ``pkg/adaptor/k8sops/node.go AdvertiseExtendedResources``,
``RemoveExtendedResources``).

At start, in the background: merge-patch ``kata.peerpods.io/caa-owner=<POD_UID>`` on the
node, then JSON-patch ``nodes/status`` to add the capacity; retried with backoff while the
API server is unreachable. At shutdown: read the node and remove the capacity only if the
annotation still names this pod, so that during a rolling update the newer adaptor's
advertisement survives the older one's exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from lightkube import AsyncClient
from lightkube.resources.core_v1 import Node
from lightkube.types import PatchType

from k8s.access import DEFAULT_BACKOFF, Backoff, KubeError, retry, translate
from k8s.objects import OWNER_ANNOTATION, capacity_patch, owner_patch

log = logging.getLogger(__name__)

REMOVE_TIMEOUT = 10.0


class NodeResource:
    def __init__(self, client: AsyncClient, node_name: str, owner_uid: str, limit: int,
                 *, backoff: Backoff = DEFAULT_BACKOFF) -> None:
        self._client = client
        self._node = node_name
        self._owner = owner_uid
        self._limit = limit
        self._backoff = backoff
        self._task: asyncio.Task[None] | None = None
        self.advertised = asyncio.Event()

    def start(self) -> None:
        if self._limit < 0:
            log.info("no extended resource on node %s (NODE_NAME unset or "
                     "PEERPODS_LIMIT_PER_NODE negative)", self._node)
            return
        self._task = asyncio.create_task(self._advertise(), name="node-extended-resource")

    async def _advertise(self) -> None:
        what = f"node {self._node}: advertising the extended resource"
        if self._owner:
            await retry(what, lambda: self._patch(owner_patch(self._owner), PatchType.MERGE),
                        backoff=self._backoff)
        await retry(what, lambda: self._patch(capacity_patch(self._limit), PatchType.JSON,
                                              status=True), backoff=self._backoff)
        self.advertised.set()
        log.info("node %s: extended resource kata.peerpods.io/vm=%d set (owner %s)",
                 self._node, self._limit, self._owner or "-")

    async def _patch(self, patch: dict[str, Any] | list[Any], patch_type: PatchType, *,
                     status: bool = False) -> None:
        with translate(f"node {self._node}: patch"):
            if status:
                await self._client.patch(Node.Status, self._node, patch, patch_type=patch_type)
            else:
                await self._client.patch(Node, self._node, patch, patch_type=patch_type)

    async def aclose(self) -> None:
        """Stop advertising; remove the capacity if this pod still owns the node."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, KubeError):
            await task
        if not self.advertised.is_set():
            return
        try:
            async with asyncio.timeout(REMOVE_TIMEOUT):
                await self._remove()
        except (KubeError, TimeoutError) as exc:
            log.warning("node %s: could not remove the extended resource: %s",
                        self._node, exc or "timed out")

    async def _remove(self) -> None:
        if self._owner:
            with translate(f"node {self._node}: get"):
                node = await self._client.get(Node, self._node)
            current = (node.metadata.annotations or {}).get(OWNER_ANNOTATION, "") \
                if node.metadata else ""
            if current != self._owner:
                log.info("node %s: skipping extended resource removal: current owner is %r, "
                         "this adaptor is %r", self._node, current, self._owner)
                return
        try:
            await self._patch(capacity_patch(None), PatchType.JSON, status=True)
        except KubeError as exc:
            if exc.code != 422:  # already gone
                raise
        log.info("node %s: extended resource removed", self._node)
