"""The adaptor's Kubernetes integration as one object the daemon starts and closes: the
node extended resource, PeerPod objects, ``auth.json`` from pull secrets, and the startup
probe's check of the node's peer pods. Built only when Kubernetes access is on
(:func:`k8s.access.detect`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from k8s import pullsecrets
from k8s.access import DEFAULT_BACKOFF, Backoff, Target, detect, make_client
from k8s.node import NodeResource
from k8s.peerpods import CLOSE_GRACE, PeerPodService
from k8s.readiness import PeerPodsReady

if TYPE_CHECKING:
    from adaptor.config import AdaptorSettings
    from adaptor.record import SandboxRecord

log = logging.getLogger(__name__)

FIELD_MANAGER = "cloud-api-adaptor"
#: CreateVM waits at most this long for the pull secrets (then goes on without auth.json).
AUTH_TIMEOUT = 3.0


class Cluster:
    def __init__(self, target: Target, *, node_name: str, pod_uid: str, limit: int,
                 cloud_provider: str, runtime_class: str, backoff: Backoff = DEFAULT_BACKOFF,
                 auth_timeout: float = AUTH_TIMEOUT, close_grace: float = CLOSE_GRACE) -> None:
        self.target = target
        self.client = make_client(target, field_manager=FIELD_MANAGER)
        self.node = NodeResource(self.client, node_name, pod_uid, limit, backoff=backoff)
        self.pod_objects = PeerPodService(self.client, cloud_provider, backoff=backoff)
        self.ready = PeerPodsReady(self.client, node_name, runtime_class)
        self._auth_timeout = auth_timeout
        self._close_grace = close_grace

    def start(self) -> None:
        log.info("Kubernetes access on (%s)", self.target.source)
        self.node.start()

    async def auth_json(self, pod_namespace: str, pod_name: str) -> str | None:
        try:
            async with asyncio.timeout(self._auth_timeout):
                return await pullsecrets.auth_json(self.client, pod_namespace, pod_name)
        except TimeoutError:
            log.warning("pod %s/%s: image pull secrets not read within %.0fs; the pod VM gets "
                        "no auth.json", pod_namespace, pod_name, self._auth_timeout)
            return None

    def restored(self, records: Iterable[SandboxRecord]) -> None:
        """The sandboxes reloaded at startup: each one's PeerPod must exist."""
        for record in records:
            if record.peerpod and record.instance_id:
                self.pod_objects.instance_restored(record.pod_namespace, record.pod_name,
                                                   record.peerpod, record.instance_id)

    async def startup_ready(self) -> tuple[bool, str]:
        return await self.ready.check()

    async def aclose(self) -> None:
        await self.pod_objects.aclose(self._close_grace)
        await self.node.aclose()
        await self.client.close()


def from_settings(settings: AdaptorSettings, provider: str, node_name: str,
                  env: Mapping[str, str]) -> Cluster | None:
    """The integration when Kubernetes access is on, else ``None``; raises
    :class:`~k8s.access.KubeError` for a kubeconfig that cannot be read. The extended
    resource is advertised only when ``NODE_NAME`` is set, as upstream."""
    target = detect(env, settings.kubeconfig)
    if target is None:
        return None
    return Cluster(
        target, node_name=node_name, pod_uid=settings.pod_uid,
        limit=settings.peerpods_limit_per_node if settings.node_name else -1,
        cloud_provider=provider, runtime_class=settings.runtimeclass_name,
    )
