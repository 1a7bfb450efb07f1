"""Prometheus metrics of one adaptor, in a registry the daemon owns (not the global one).

Names (all prefixed ``peerpods_``):
- ``sandboxes{state}`` gauge: sandboxes the adaptor knows, by record state;
- ``hypervisor_request_duration_seconds{method,result}`` histogram: CreateVM, StartVM and
  StopVM as the shim sees them; ``result`` is ``ok`` or the ttrpc status name;
- ``provider_calls_total{operation}``, ``provider_errors_total{operation,kind}`` and
  ``provider_call_duration_seconds{operation}``: every cloud API call the adaptor makes;
- ``orphan_sweeps_total{result}``, ``orphan_sweep_deletions_total``: the orphan sweep;
- ``proxy_forwarder_connections`` gauge, ``proxy_forwarder_dials_total{result}``,
  ``proxy_calls_total{result}`` and ``proxy_relayed_bytes_total{direction}``: agent proxies.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from providers.base import (
    Instance,
    InstanceRequest,
    InstanceTypeCatalogue,
    Provider,
    ProviderError,
)

PREFIX = "peerpods_"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300,
                    600)

Gauges = Callable[[], Mapping[str, float]]


class _CallbackCollector(Collector):
    """A gauge computed at scrape time (no state to keep in sync)."""

    def __init__(self, name: str, doc: str, label: str | None, values: Gauges) -> None:
        self._name, self._doc, self._label, self._values = name, doc, label, values

    def collect(self) -> Iterator[Metric]:
        values = self._values()
        if self._label is None:
            yield GaugeMetricFamily(self._name, self._doc, value=sum(values.values()))
            return
        family = GaugeMetricFamily(self._name, self._doc, labels=[self._label])
        for key, value in sorted(values.items()):
            family.add_metric([key], value)
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.hypervisor_latency = Histogram(
            PREFIX + "hypervisor_request_duration_seconds",
            "CreateVM/StartVM/StopVM duration as the Kata shim sees it",
            ["method", "result"], registry=r, buckets=_LATENCY_BUCKETS,
        )
        self.provider_calls = Counter(
            PREFIX + "provider_calls", "cloud provider calls", ["operation"], registry=r
        )
        self.provider_errors = Counter(
            PREFIX + "provider_errors", "cloud provider calls that failed, by error kind",
            ["operation", "kind"], registry=r,
        )
        self.provider_latency = Histogram(
            PREFIX + "provider_call_duration_seconds", "cloud provider call duration",
            ["operation"], registry=r, buckets=_LATENCY_BUCKETS,
        )
        self.sweeps = Counter(
            PREFIX + "orphan_sweeps", "orphan sweeps run, by result", ["result"], registry=r
        )
        self.sweep_deletions = Counter(
            PREFIX + "orphan_sweep_deletions", "instances deleted by the orphan sweep",
            registry=r,
        )
        self.proxy_dials = Counter(
            PREFIX + "proxy_forwarder_dials", "agent proxy connections to forwarders, by result",
            ["result"], registry=r,
        )
        self.proxy_calls = Counter(
            PREFIX + "proxy_calls", "agent API calls relayed, by result", ["result"], registry=r
        )
        self.proxy_bytes = Counter(
            PREFIX + "proxy_relayed_bytes",
            "agent API payload bytes relayed (to_agent: requests, from_agent: responses)",
            ["direction"], registry=r,
        )
        for direction in ("to_agent", "from_agent"):
            self.proxy_bytes.labels(direction)
        self.sweep_deletions.inc(0)

    def add_gauge(self, name: str, doc: str, label: str | None, values: Gauges) -> None:
        self.registry.register(_CallbackCollector(PREFIX + name, doc, label, values))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class InstrumentedProvider:
    """Wraps a provider: counts each call, its errors by kind, and its duration."""

    def __init__(self, inner: Provider, metrics: Metrics) -> None:
        self.inner = inner
        self.name = inner.name
        self._metrics = metrics

    async def _call(self, operation: str, call: Callable[[], Any]) -> Any:
        m = self._metrics
        m.provider_calls.labels(operation).inc()
        started = time.monotonic()
        try:
            return await call()
        except ProviderError as exc:
            m.provider_errors.labels(operation, type(exc).__name__).inc()
            raise
        except Exception:
            m.provider_errors.labels(operation, "unexpected").inc()
            raise
        finally:
            m.provider_latency.labels(operation).observe(time.monotonic() - started)

    async def create_instance(self, request: InstanceRequest) -> Instance:
        result: Instance = await self._call(
            "create_instance", lambda: self.inner.create_instance(request)
        )
        return result

    async def delete_instance(self, instance_id: str) -> None:
        await self._call("delete_instance", lambda: self.inner.delete_instance(instance_id))

    async def list_instances(self, tags: Mapping[str, str]) -> list[Instance]:
        result: list[Instance] = await self._call(
            "list_instances", lambda: self.inner.list_instances(tags)
        )
        return result

    async def instance_types(self) -> InstanceTypeCatalogue | None:
        result: InstanceTypeCatalogue | None = await self._call(
            "instance_types", self.inner.instance_types
        )
        return result

    async def verify_config(self) -> None:
        await self._call("verify_config", self.inner.verify_config)

    async def aclose(self) -> None:
        await self.inner.aclose()
