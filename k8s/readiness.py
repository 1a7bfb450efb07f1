"""The startup probe's view of the node (upstream: ``pkg/probe/checker.go GetAllPeerPods``,
``probe.go StartupHandler``): every pod on this node whose runtime class is
``RUNTIMECLASS_NAME`` and that has a Ready condition must have it True. Once that held, it is
not checked again.

One difference, because pod VMs survive an adaptor restart here: upstream also requires the
Ready condition to have changed after the adaptor started (its restart broke every peer
pod, which had to come back); here a peer pod that stayed Ready through the restart counts.
"""

from __future__ import annotations

import asyncio
import logging

from lightkube import AsyncClient
from lightkube.resources.core_v1 import Pod

from k8s.access import KubeError, translate

log = logging.getLogger(__name__)

CHECK_TIMEOUT = 4.0


class PeerPodsReady:
    def __init__(self, client: AsyncClient, node_name: str, runtime_class: str) -> None:
        self._client = client
        self._node = node_name
        self._runtime_class = runtime_class
        self.done = False

    async def check(self) -> tuple[bool, str]:
        if self.done:
            return True, "ok"
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                waiting = await self._not_ready()
        except (KubeError, TimeoutError) as exc:
            return False, f"cannot list the peer pods of node {self._node}: " \
                f"{exc or 'timed out'}"
        if waiting:
            return False, f"peer pods not Ready yet: {', '.join(waiting[:10])}"
        self.done = True
        log.info("node %s: all peer pods are Ready", self._node)
        return True, "ok"

    async def _not_ready(self) -> list[str]:
        waiting = []
        with translate(f"list pods on node {self._node}"):
            async for pod in self._client.list(Pod, namespace="*",
                                               fields={"spec.nodeName": self._node}):
                spec, status, meta = pod.spec, pod.status, pod.metadata
                if spec is None or spec.runtimeClassName != self._runtime_class:
                    continue
                for cond in (status.conditions if status else None) or []:
                    if cond.type == "Ready" and cond.status != "True":
                        waiting.append(f"{meta.namespace}/{meta.name}" if meta else "?")
        return waiting
