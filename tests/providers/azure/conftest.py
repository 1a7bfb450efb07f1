"""Fixtures: a loopback ARM endpoint per test and providers that talk to it."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from providers.azure.provider import AzureProvider
from providers.azure.settings import AzureSettings
from providers.base import InstanceRequest, InstanceSpec, adaptor_tags
from tests.providers.azure.armserver import ArmServer
from tests.providers.azure.armstate import ArmState

REGION = "eastus"
USER_DATA = (
    b"#cloud-config\nwrite_files:\n- path: /run/peerpod/apf.json\n  content: '{}'\n"
    + bytes(range(256))
)


def new_state(subnet_cidr: str = "10.1.0.0/24") -> ArmState:
    state = ArmState(subscription=str(uuid.uuid4()), resource_group="peerpods-rg",
                     region=REGION, subnet_cidr=subnet_cidr)
    state.add_subnet()
    state.nsgs.add(state.resource_id("Microsoft.Network", "networkSecurityGroups",
                                     "pods-nsg").lower())
    state.images.add(managed_image(state).lower())
    state.images.add(community_image().lower())
    return state


def managed_image(state: ArmState) -> str:
    return state.resource_id("Microsoft.Compute", "images", "podvm-image")


def community_image() -> str:
    return "/CommunityGalleries/cocopodvm-d0e4f35f/Images/podvm_image0/Versions/2026.07.27"


def settings_for(server: ArmServer, **changes: Any) -> AzureSettings:
    s = server.state
    settings = AzureSettings(
        client_id=s.client_id, client_secret=s.client_secret, tenant_id=s.tenant,
        subscription_id=s.subscription, region=s.region, resource_group=s.resource_group,
        subnet_id=next(iter(sorted(s.subnets))), image_id=managed_image(s),
        arm_endpoint=server.url, authority_host=server.url,
    )
    # the subnet id as stored is lower-cased: give the provider the real spelling
    settings = dataclasses.replace(
        settings, subnet_id=s.resource_id("Microsoft.Network", "virtualNetworks", "vnet-1")
        + "/subnets/pods")
    return dataclasses.replace(settings, **changes)


def make(server: ArmServer, node: str = "node-1", **changes: Any) -> AzureProvider:
    return AzureProvider(settings_for(server, **changes), node_name=node,
                         connection_verify=server.ca_file, polling_interval=0.01)


def request_for(node: str = "node-1", *, pod: str = "web", sid: str | None = None,
                user_data: bytes = USER_DATA, spec: InstanceSpec | None = None,
                attempt: int = 0) -> InstanceRequest:
    sid = sid or uuid.uuid4().hex + uuid.uuid4().hex
    return InstanceRequest(
        name=f"podvm-{pod}-{sid[:8]}", sandbox_id=sid, pod_name=pod,
        pod_namespace="default", user_data=user_data, spec=spec or InstanceSpec(),
        tags=adaptor_tags(node, sid, pod, "default"), attempt=attempt,
    )


@pytest.fixture
async def arm() -> AsyncIterator[ArmServer]:
    server = await ArmServer(new_state()).start()
    yield server
    await server.aclose()


@pytest.fixture
async def providers(arm: ArmServer) -> AsyncIterator[Callable[..., AzureProvider]]:
    made: list[AzureProvider] = []

    def factory(**changes: Any) -> AzureProvider:
        provider = make(arm, **changes)
        made.append(provider)
        return provider

    yield factory
    for provider in made:
        await provider.aclose()
