"""Fixtures: a loopback Compute endpoint per test and GCP providers pointed at it."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from providers.base import InstanceRequest, InstanceSpec, adaptor_tags
from providers.gcp.provider import GcpProvider
from providers.gcp.settings import GcpSettings
from tests.providers.gcp.computeserver import ComputeServer

# Binary, non-UTF-8 and NUL bytes: any re-encoding or double base64 would show.
USER_DATA = b"#cloud-config\nwrite_files: []\n" + bytes(range(256))
PROJECT = "pp-project"
ZONE = "us-central1-a"


def base_settings(url: str, **overrides: Any) -> GcpSettings:
    settings = GcpSettings(
        project_id=PROJECT, zone=ZONE, network="default", image_name="podvm-image",
        machine_type="n2d-standard-2", confidential_type="SEV_SNP", api_endpoint=url,
    )
    return dataclasses.replace(settings, **overrides)


@pytest.fixture
async def compute() -> AsyncIterator[ComputeServer]:
    server = ComputeServer(project=PROJECT, zone=ZONE)
    await server.start()
    try:
        yield server
    finally:
        await server.aclose()


@pytest.fixture
def node() -> str:
    return f"node-{uuid.uuid4().hex[:10]}"


ProviderFactory = Callable[..., GcpProvider]


@pytest.fixture
async def make_provider(compute: ComputeServer, node: str) -> AsyncIterator[ProviderFactory]:
    made: list[GcpProvider] = []

    def factory(**overrides: Any) -> GcpProvider:
        provider = GcpProvider(base_settings(compute.url, **overrides), node_name=node,
                               poll_interval=0.01)
        made.append(provider)
        return provider

    try:
        yield factory
    finally:
        for provider in made:
            await provider.aclose()


def make_request(
    node: str, *, sandbox_id: str | None = None, spec: InstanceSpec | None = None,
    pod: str = "nginx", attempt: int = 0,
) -> InstanceRequest:
    sid = sandbox_id or uuid.uuid4().hex + uuid.uuid4().hex
    return InstanceRequest(
        name=f"podvm-{pod}-{sid[:8]}", sandbox_id=sid, pod_name=pod, pod_namespace="default",
        user_data=USER_DATA, spec=spec or InstanceSpec(),
        tags=adaptor_tags(node, sid, pod, "default"), attempt=attempt,
    )
