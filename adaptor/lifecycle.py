"""What every sandbox shares: the manager's settings, the collaborators a sandbox acts
through (provider, worker network, TLS, store, metrics) and the instance-delete retry."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from adaptor.errors import AdaptorError, InstanceTypeError, StartFailed
from adaptor.instancetype import select_instance_type
from adaptor.network.base import WorkerNetwork
from adaptor.store import SandboxStore
from adaptor.tls import AgentTLS
from adaptor.volumes import DIRECT_VOLUMES_DIR
from providers.base import InstanceSpec, InstanceTypeCatalogue, Provider, ProviderError

if TYPE_CHECKING:
    from adaptor.metrics import Metrics

log = logging.getLogger("adaptor.manager")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Instance deletion retries: ``attempts`` tries, exponential backoff between them."""

    attempts: int = 5
    initial_delay: float = 1.0
    max_delay: float = 30.0

    def delays(self) -> Iterator[float]:
        delay = self.initial_delay
        for _ in range(self.attempts - 1):
            yield delay
            delay = min(delay * 2, self.max_delay)


@dataclass(frozen=True, slots=True)
class ManagerConfig:
    pods_dir: str
    node_name: str
    forwarder_port: int = 15150
    proxy_timeout: float = 300.0
    enable_scratch_space: bool = False
    ext_network_via_podvm: bool = False
    default_initdata: str = ""
    direct_volumes_dir: str = DIRECT_VOLUMES_DIR
    delete_retry: RetryPolicy = field(default_factory=RetryPolicy)


@dataclass(frozen=True, slots=True)
class SandboxContext:
    """The collaborators every sandbox acts through; shared, owned by the manager."""

    config: ManagerConfig
    provider: Provider
    network: WorkerNetwork
    tls: AgentTLS
    store: SandboxStore | None = None
    metrics: Metrics | None = None
    catalogue: InstanceTypeCatalogue | None = None

    def select_instance_type(self, sandbox_id: str, spec: InstanceSpec) -> InstanceSpec:
        """The spec with the instance type to create, chosen as upstream's providers choose it
        in CreateInstance; a failure fails StartVM with upstream's ``creating an instance :``."""
        if self.catalogue is None:
            return spec
        try:
            chosen, reason = select_instance_type(
                self.catalogue, requested=spec.instance_type, vcpus=spec.vcpus,
                memory_mib=spec.memory_mib, gpus=spec.gpus,
            )
        except InstanceTypeError as exc:
            raise StartFailed(f"creating an instance : {exc}") from exc
        log.info("sandbox=%s: instance type %s (selected by %s)", sandbox_id, chosen, reason)
        return replace(spec, instance_type=chosen)

    async def delete_instance(self, sandbox_id: str, instance_id: str) -> None:
        """Delete with the retry policy; raises the last :class:`ProviderError`."""
        policy = self.config.delete_retry
        delays = policy.delays()
        attempt = 0
        while True:
            attempt += 1
            try:
                await self.provider.delete_instance(instance_id)
            except ProviderError as exc:
                delay = next(delays, None)
                if delay is None:
                    raise
                log.warning("sandbox=%s: deleting instance %s failed (attempt %d/%d), "
                            "retrying in %.1fs: %s", sandbox_id, instance_id, attempt,
                            policy.attempts, delay, exc)
                await asyncio.sleep(delay)
            else:
                log.info("sandbox=%s: instance %s deleted", sandbox_id, instance_id)
                return


async def shielded(coro: Awaitable[None]) -> None:
    """Run clean-up to completion even if the caller is cancelled meanwhile, once or again
    (a StartVM whose caller left is cancelled a second time when the daemon shuts down)."""
    task = asyncio.ensure_future(coro)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    task.result()


def describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled by the caller"
    if isinstance(exc, AdaptorError | ProviderError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
