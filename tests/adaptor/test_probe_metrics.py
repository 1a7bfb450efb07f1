"""/startup, /healthz and /metrics on the probe port, scraped over real HTTP."""

from __future__ import annotations

import asyncio

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from adaptor.server import Daemon
from protocols.kata import health_pb2
from protocols.ttrpc import Client
from providers.base import InstanceTypeCatalogue
from tests.adaptor.conftest import FAST_RETRY, make_settings
from tests.adaptor.helpers import eventually, expect_error
from tests.adaptor.shim import Shim
from tests.fakes.cloud import FakeCloud
from tests.fakes.network import FakeWorkerNetwork


async def get(port: int, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, \
            session.get(f"http://127.0.0.1:{port}{path}") as response:
        return response.status, await response.text()


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = await get(port, "/metrics")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_startup_then_metrics_follow_the_lifecycle(
    short_dir: str, cloud: FakeCloud, network: FakeWorkerNetwork
) -> None:
    release = asyncio.Event()
    real = cloud.provider.instance_types

    async def slow_catalogue() -> InstanceTypeCatalogue | None:
        await release.wait()  # startup is still under way while this waits
        return await real()

    cloud.provider.instance_types = slow_catalogue  # type: ignore[method-assign]
    daemon = Daemon(make_settings(short_dir, cloud.port), cloud.provider, network=network,
                    delete_retry=FAST_RETRY)
    starting = asyncio.create_task(daemon.start())
    try:
        await eventually(lambda: daemon.probe_port != 0)
        port = daemon.probe_port
        assert (await get(port, "/startup"))[0] == 503
        assert (await get(port, "/healthz"))[0] == 503
        release.set()
        await starting
        assert await get(port, "/startup") == (200, "ok\n")
        assert (await get(port, "/healthz"))[0] == 200

        before = await scrape(port)
        assert value(before, "peerpods_sandboxes", state="running") == 0
        shim = Shim(daemon.settings.socket)
        path = await shim.create_vm("sb-m")
        await shim.start_vm("sb-m")
        async with await Client.connect_unix(path) as conn:
            await conn.call("grpc.Health", "Check", health_pb2.CheckRequest(),
                            health_pb2.HealthCheckResponse, timeout=5)
        await expect_error(shim.start_vm("sb-unknown"))
        after = await scrape(port)
        hist = "peerpods_hypervisor_request_duration_seconds_count"
        assert value(after, hist, method="CreateVM", result="ok") == 1
        assert value(after, hist, method="StartVM", result="ok") == 1
        assert value(after, hist, method="StartVM", result="not_found") == 1
        assert value(after, "peerpods_sandboxes", state="running") == 1
        assert value(after, "peerpods_sandboxes", state="created") == 0
        assert value(after, "peerpods_provider_calls_total", operation="create_instance") == 1
        assert value(after, "peerpods_proxy_forwarder_connections") == 1
        assert value(after, "peerpods_proxy_forwarder_dials_total", result="ok") == 1
        assert value(after, "peerpods_proxy_calls_total", result="ok") == 1
        assert value(after, "peerpods_proxy_relayed_bytes_total", direction="from_agent") > 0

        cloud.provider.faults.fail_delete_times = 1  # FAST_RETRY: the second attempt works
        await shim.stop_vm("sb-m")
        final = await scrape(port)
        assert value(final, "peerpods_provider_errors_total", operation="delete_instance",
                     kind="ProviderUnavailable") == 1
        assert value(final, "peerpods_provider_calls_total", operation="delete_instance") == 2
        assert value(final, "peerpods_sandboxes", state="running") == 0
        assert value(final, hist, method="StopVM", result="ok") == 1
        assert value(final, "peerpods_orphan_sweeps_total", result="ok") >= 1
    finally:
        release.set()
        await daemon.aclose()
