"""Throttling and capacity faults injected between the provider and moto_server."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import pytest

from providers.base import NODE_TAG, InstanceSpec, ProviderUnavailable, QuotaExceeded, Throttled
from tests.providers.aws.conftest import ProviderFactory, alive_ids, make_request
from tests.providers.aws.ec2proxy import Ec2Proxy, Fault


async def test_hundred_creates_with_a_fifth_throttled_all_succeed(
    make_provider: ProviderFactory, proxy: Ec2Proxy, ec2: Any, node: str
) -> None:
    proxy.faults.append(Fault(code="RequestLimitExceeded", status=503, rate=0.2,
                              message="Request limit exceeded."))
    provider = make_provider()
    requests = [make_request(node) for _ in range(100)]
    async with asyncio.timeout(90):
        instances = await asyncio.gather(*(provider.create_instance(r) for r in requests))

    assert len({i.id for i in instances}) == 100
    assert all(i.ips for i in instances)
    throttled = [r for r in proxy.requests if r.injected == "RequestLimitExceeded"]
    assert len(throttled) >= 20  # about a fifth of some 300 calls were refused
    assert {r.params["ClientToken"] for r in proxy.calls("RunInstances") if not r.injected} == {
        r.params["ClientToken"] for r in proxy.calls("RunInstances")}
    assert alive_ids(ec2, {NODE_TAG: node}) == {i.id for i in instances}

    await asyncio.gather(*(provider.delete_instance(i.id) for i in instances))
    assert alive_ids(ec2, {NODE_TAG: node}) == set()


async def test_capacity_error_fails_fast_naming_the_type(
    make_provider: ProviderFactory, proxy: Ec2Proxy, ec2: Any, node: str
) -> None:
    proxy.faults.append(Fault(
        code="InsufficientInstanceCapacity", status=500, action="RunInstances",
        message="We currently do not have sufficient m6a.2xlarge capacity in the AZ."))
    provider = make_provider()
    request = make_request(node, spec=InstanceSpec(instance_type="m6a.2xlarge"))
    started = time.monotonic()
    with pytest.raises(QuotaExceeded, match=r"instance type m6a\.2xlarge") as caught:
        await provider.create_instance(request)
    assert time.monotonic() - started < 5
    assert "InsufficientInstanceCapacity" in str(caught.value)
    assert len(proxy.calls("RunInstances")) == 1  # no retry
    assert alive_ids(ec2, {NODE_TAG: node}) == set()


@pytest.mark.parametrize("code", ["InstanceLimitExceeded", "VcpuLimitExceeded"])
async def test_quota_errors_are_quota_exceeded(
    make_provider: ProviderFactory, proxy: Ec2Proxy, ec2: Any, node: str, code: str
) -> None:
    proxy.faults.append(Fault(code=code, status=400, action="RunInstances"))
    provider = make_provider()
    with pytest.raises(QuotaExceeded, match=r"m6a\.large"):
        await provider.create_instance(make_request(node))
    assert len(proxy.calls("RunInstances")) == 1
    assert alive_ids(ec2, {NODE_TAG: node}) == set()


async def test_throttling_past_the_deadline_is_throttled(
    make_provider: ProviderFactory, proxy: Ec2Proxy, ec2: Any, node: str
) -> None:
    proxy.faults.append(Fault(code="RequestLimitExceeded", status=503, action="RunInstances"))
    provider = make_provider(api_timeout=timedelta(seconds=1))
    started = time.monotonic()
    with pytest.raises(Throttled, match="RequestLimitExceeded"):
        await provider.create_instance(make_request(node))
    assert time.monotonic() - started < 5
    assert len(proxy.calls("RunInstances")) > 1
    assert alive_ids(ec2, {NODE_TAG: node}) == set()


async def test_throttling_never_surfaces_before_the_callers_deadline(
    make_provider: ProviderFactory, proxy: Ec2Proxy, ec2: Any, node: str
) -> None:
    proxy.faults.append(Fault(code="Throttling", status=400, action="RunInstances"))
    provider = make_provider()  # AWS_API_TIMEOUT 2m: the caller's timeout comes first
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1.5):
            await provider.create_instance(make_request(node))
    assert len(proxy.calls("RunInstances")) > 1
    assert alive_ids(ec2, {NODE_TAG: node}) == set()


async def test_throttled_deletes_and_lists_are_retried(
    make_provider: ProviderFactory, proxy: Ec2Proxy, ec2: Any, node: str
) -> None:
    provider = make_provider()
    instance = await provider.create_instance(make_request(node))
    proxy.faults.append(Fault(code="RequestLimitExceeded", status=503, limit=2,
                              action="TerminateInstances"))
    proxy.faults.append(Fault(code="RequestLimitExceeded", status=503, limit=2,
                              action="DescribeInstances"))
    assert [i.id for i in await provider.list_instances({NODE_TAG: node})] == [instance.id]
    await provider.delete_instance(instance.id)
    assert alive_ids(ec2, {NODE_TAG: node}) == set()
    assert len(proxy.calls("TerminateInstances")) == 3


async def test_cancelled_create_releases_the_instance_in_flight(
    make_provider: ProviderFactory, proxy: Ec2Proxy, ec2: Any, node: str
) -> None:
    proxy.delays["RunInstances"] = 0.5
    provider = make_provider()
    request = make_request(node)
    task = asyncio.create_task(provider.create_instance(request))
    async with asyncio.timeout(10):
        await proxy.wait_for("RunInstances")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await provider.aclose()  # waits for the call in flight and the delete it triggers
    assert len(proxy.calls("TerminateInstances")) == 1
    assert alive_ids(ec2, {NODE_TAG: node}) == set()


async def test_lost_answers_to_every_run_release_what_was_made(
    make_provider: ProviderFactory, proxy: Ec2Proxy, ec2: Any, node: str
) -> None:
    # Every RunInstances reaches moto (which ignores ClientToken) but each answer is lost.
    proxy.faults.append(Fault(code="InternalError", status=500, action="RunInstances",
                              after_forward=True))
    provider = make_provider()
    request = make_request(node)
    with pytest.raises(ProviderUnavailable, match="RunInstances"):
        await provider.create_instance(request)
    assert len(proxy.calls("RunInstances")) == 4  # a few attempts, then give up
    assert alive_ids(ec2, {NODE_TAG: node}) == set()
