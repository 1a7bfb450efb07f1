"""Leader election through a ``coordination.k8s.io/v1`` Lease, as client-go's
``tools/leaderelection`` does it with controller-runtime's defaults (upstream peerpod-ctrl's
``--leader-elect``: Lease ``33f6c5d6.confidentialcontainers.org`` in the controller's
namespace, lease duration 15 s, renew deadline 10 s, retry period 2 s).

- Acquire: the Lease is absent (create it), released (empty ``holderIdentity``) or expired,
  then written with this identity, ``acquireTime``/``renewTime`` now,
  ``leaseDurationSeconds`` and ``leaseTransitions`` one higher than before. Expired means
  the record has not changed for its ``leaseDurationSeconds`` by this process's own clock
  since it was first seen so (client-go's rule: no clock skew between holders matters).
  Tried every retry period, with client-go's jitter (up to 1.2 periods more).
- Renew: every retry period, an update carrying the ``resourceVersion`` last read; on
  failure the Lease is read again and the write retried every retry period. If no write
  succeeded within the renew deadline, or the Lease names another holder (a 409 Conflict
  means someone else wrote it), leadership is lost. client-go keeps trying to the deadline
  even when another holder is seen; here that ends leadership at once, so two leaders never
  overlap for longer than one write.
- Release (on a clean shutdown, once the caller stopped its work): the Lease keeps
  ``leaseTransitions``, loses its holder and gets ``leaseDurationSeconds: 1``, so a standby
  takes over within one retry period instead of one lease duration.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import logging
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, replace
from typing import Any

from lightkube import AsyncClient

from k8s.access import KubeError, translate
from k8s.objects import Lease
from runtime import aio
from runtime.errors import UsageError

log = logging.getLogger(__name__)

#: upstream's LeaderElectionID (``src/peerpod-ctrl/main.go``)
LEASE_NAME = "33f6c5d6.confidentialcontainers.org"
JITTER = 1.2  # client-go's JitterFactor
NO_NAMESPACE = ("unable to find leader election namespace: not running in-cluster, please "
                "specify LeaderElectionNamespace")


@dataclass(frozen=True, slots=True)
class Timing:
    """controller-runtime's defaults; checked as client-go's ``NewLeaderElector`` does."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if self.lease_duration < 1 or self.renew_deadline <= 0 or self.retry_period <= 0:
            raise UsageError("leader election: lease duration must be at least 1s, renew "
                             "deadline and retry period above 0")
        if self.lease_duration <= self.renew_deadline:
            raise UsageError("leader election: lease duration must exceed the renew deadline")
        if self.renew_deadline <= JITTER * self.retry_period:
            raise UsageError("leader election: renew deadline must exceed "
                             f"{JITTER} x the retry period")

    @property
    def request_timeout(self) -> float:
        """Per request, as client-go's ``resourcelock.NewFromKubeconfig``."""
        return max(self.renew_deadline / 2, 1.0)


@dataclass(frozen=True, slots=True)
class LeaderRecord:
    """A Lease's spec as client-go's ``LeaderElectionRecord``."""

    holder: str = ""
    lease_duration: int = 0
    acquire_time: str = ""
    renew_time: str = ""
    transitions: int = 0

    @classmethod
    def of(cls, spec: Mapping[str, Any] | None) -> LeaderRecord:
        spec = spec or {}
        return cls(str(spec.get("holderIdentity") or ""),
                   int(spec.get("leaseDurationSeconds") or 0),
                   str(spec.get("acquireTime") or ""), str(spec.get("renewTime") or ""),
                   int(spec.get("leaseTransitions") or 0))

    def spec(self) -> dict[str, Any]:
        return {"holderIdentity": self.holder, "leaseDurationSeconds": self.lease_duration,
                "acquireTime": self.acquire_time, "renewTime": self.renew_time,
                "leaseTransitions": self.transitions}


def micro_time(now: datetime.datetime | None = None) -> str:
    """metav1.MicroTime: RFC 3339 with exactly six fractional digits, UTC."""
    now = now or datetime.datetime.now(datetime.UTC)
    return now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_identity() -> str:
    """``<hostname>_<uuid>``, as controller-runtime names a candidate."""
    return f"{socket.gethostname()}_{uuid.uuid4()}"


DEFAULT_TIMING = Timing()


class LeaderElector:
    def __init__(self, client: AsyncClient, namespace: str, *, identity: str,
                 timing: Timing = DEFAULT_TIMING, name: str = LEASE_NAME) -> None:
        self.client = client
        self.namespace, self.name, self.identity, self.timing = namespace, name, identity, timing
        self.lease = f"{namespace}/{name}"
        self.leading = asyncio.Event()
        self._observed = LeaderRecord()
        self._observed_at = 0.0
        self._object: dict[str, Any] | None = None  # the Lease last read or written

    # ---------------------------------------------------------------- loops
    async def acquire(self) -> None:
        """Return once this candidate holds the Lease (tried every retry period)."""
        log.info("attempting to acquire leader lease %s...", self.lease)
        while not await self.try_acquire_or_renew():
            period = self.timing.retry_period
            await asyncio.sleep(period + random.uniform(0, JITTER * period))
        self.leading.set()
        log.info("successfully acquired lease %s", self.lease)

    async def hold(self) -> None:
        """Renew every retry period; return when leadership is lost."""
        while True:
            await asyncio.sleep(self.timing.retry_period)
            if not await self._renew():
                self.leading.clear()
                holder = self._observed.holder
                log.error("failed to renew lease %s: %s", self.lease,
                          f"held by {holder}" if holder != self.identity
                          else f"no renewal within {self.timing.renew_deadline:g}s")
                return

    async def _renew(self) -> bool:
        try:
            async with asyncio.timeout(self.timing.renew_deadline):
                while not await self.try_acquire_or_renew():
                    if not self.is_leader():
                        return False
                    await asyncio.sleep(self.timing.retry_period)
        except TimeoutError:
            return False
        return True

    async def release(self) -> None:
        """Give the Lease up (only if held), keeping its transition count."""
        if not self.is_leader():
            return
        now = micro_time()
        record = LeaderRecord("", 1, now, now, self._observed.transitions)
        try:
            async with asyncio.timeout(self.timing.renew_deadline):
                await self._update(record)
        except (KubeError, TimeoutError) as exc:
            log.error("failed to release lease %s: %s", self.lease, exc or "timed out")
            return
        self.leading.clear()
        log.info("released lease %s", self.lease)

    # ---------------------------------------------------------------- one try
    def is_leader(self) -> bool:
        return self._observed.holder == self.identity

    def _valid(self) -> bool:
        return self._observed_at + self._observed.lease_duration > time.monotonic()

    async def try_acquire_or_renew(self) -> bool:
        """client-go's ``tryAcquireOrRenew``: True when this candidate holds the Lease."""
        now = micro_time()
        mine = LeaderRecord(self.identity, int(self.timing.lease_duration), now, now)
        if self.is_leader() and self._valid():  # fast path: the Lease is as last written
            try:
                await self._update(replace(mine, acquire_time=self._observed.acquire_time,
                                           transitions=self._observed.transitions))
                return True
            except KubeError as exc:
                log.debug("%s; reading the lease again", exc)
        try:
            current = await self._get()
        except KubeError as exc:
            if not exc.not_found:
                log.warning("%s", exc)
                return False
            return await self._write(self._create, mine)
        record = LeaderRecord.of(current.get("spec"))
        if record != self._observed:
            self._observe(record)
        if record.holder and self._valid() and not self.is_leader():
            return False
        if self.is_leader():
            mine = replace(mine, acquire_time=record.acquire_time,
                           transitions=record.transitions)
        else:
            mine = replace(mine, transitions=record.transitions + 1)
        return await self._write(self._update, mine)

    async def _write(self, call: Callable[[LeaderRecord], Awaitable[None]],
                     record: LeaderRecord) -> bool:
        try:
            await call(record)
        except KubeError as exc:
            if exc.conflict:  # 409: another candidate wrote it first
                log.info("%s; another candidate wrote it first", exc)
            else:
                log.warning("%s", exc)
            return False
        return True

    def _observe(self, record: LeaderRecord) -> None:
        if record.holder != self._observed.holder and record.holder \
                and record.holder != self.identity:
            log.info("lease %s held by %s", self.lease, record.holder)
        self._observed, self._observed_at = record, time.monotonic()

    # ---------------------------------------------------------------- API calls
    async def _call(self, what: str, call: Coroutine[Any, Any, Any]) -> dict[str, Any]:
        try:
            async with asyncio.timeout(self.timing.request_timeout):
                with translate(f"{what} lease {self.lease}"):
                    obj: dict[str, Any] = (await call).to_dict()
        except TimeoutError:
            raise KubeError(f"{what} lease {self.lease}: API server did not answer within "
                            f"{self.timing.request_timeout:g}s") from None
        self._object = obj
        return obj

    async def _get(self) -> dict[str, Any]:
        return await self._call("get", self.client.get(Lease, self.name,
                                                        namespace=self.namespace))

    async def _create(self, record: LeaderRecord) -> None:
        lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                 "metadata": {"name": self.name, "namespace": self.namespace},
                 "spec": record.spec()}
        await self._call("create", self.client.create(Lease.from_dict(lease)))
        self._observe(record)

    async def _update(self, record: LeaderRecord) -> None:
        """Write ``record`` over the Lease last read: a 409 if it changed since."""
        if self._object is None:
            raise KubeError(f"update lease {self.lease}: not read yet")
        lease = copy.deepcopy(self._object)
        lease["spec"] = record.spec()
        await self._call("update", self.client.replace(Lease.from_dict(lease)))
        self._observe(record)


async def run_elected(elector: LeaderElector, work: Callable[[], Awaitable[None]],
                      stop: asyncio.Event) -> bool:
    """Wait to lead, then run ``work`` while leading, until ``stop`` is set (True) or
    leadership is lost (False; ``work`` has been cancelled). ``work``'s errors propagate."""
    index, _ = await aio.first_done(stop.wait(), elector.acquire())
    if index == 0:
        return True
    index, _ = await aio.first_done(stop.wait(), elector.hold(), _forever(work))
    return index != 1


async def _forever(work: Callable[[], Awaitable[None]]) -> None:
    await work()
    raise RuntimeError("leader election: the work of the leader ended by itself")


