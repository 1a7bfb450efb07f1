"""The provider package of the loopback fake cloud (``tests.fakes.cloudapi``).

Registered as ``fakecloud`` by ``tests.fakes.run_adaptor``; ``FAKECLOUD_URL`` names the
API. Errors come back as the project's provider errors, by kind.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any

import aiohttp

import providers.base as base
from providers.base import Instance, InstanceRequest, InstanceTypeCatalogue, ProviderError
from runtime.settings import setting
from tests.fakes.cloudapi import parse_created_at


@dataclass(frozen=True)
class Settings:
    TITLE = "fake cloud provider settings"

    url: str = setting(env="FAKECLOUD_URL", flag="fakecloud-url", default="",
                       help="base URL of the loopback fake cloud API", required=True)
    token: str = setting(env="FAKECLOUD_TOKEN", flag="fakecloud-token", default="",
                         secret=True, help="API token (sent, never logged)")


def _instance(data: Mapping[str, Any]) -> Instance:
    return Instance(
        id=data["id"], name=data["name"], ips=tuple(ip_address(i) for i in data["ips"]),
        tags=dict(data["tags"]), created_at=parse_created_at(data.get("created_at")),
    )


class HttpProvider:
    name = "fakecloud"

    def __init__(self, settings: Settings) -> None:
        self._url = settings.url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {settings.token}"} if settings.token else {}
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self._headers)
        return self._session

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            async with self._client().request(method, self._url + path, **kwargs) as response:
                body = await response.json()
                if response.status >= 400:
                    kind = getattr(base, str(body.get("kind")), ProviderError)
                    if not (isinstance(kind, type) and issubclass(kind, ProviderError)):
                        kind = ProviderError
                    raise kind(body.get("message", f"HTTP {response.status}"))
                return body
        except aiohttp.ClientError as exc:
            raise base.ProviderUnavailable(f"fake cloud API: {exc}") from None

    async def create_instance(self, request: InstanceRequest) -> Instance:
        spec = dataclasses.asdict(request.spec)
        spec["volumes"] = list(spec["volumes"])
        body = {
            "name": request.name, "sandbox_id": request.sandbox_id,
            "pod_name": request.pod_name, "pod_namespace": request.pod_namespace,
            "user_data": base64.b64encode(request.user_data).decode(),
            "spec": spec, "tags": dict(request.tags),
        }
        return _instance(await self._call("POST", "/instances", json=body))

    async def delete_instance(self, instance_id: str) -> None:
        await self._call("DELETE", f"/instances/{instance_id}")

    async def list_instances(self, tags: Mapping[str, str]) -> list[Instance]:
        found = await self._call("GET", "/instances", params={"tags": json.dumps(dict(tags))})
        return [_instance(item) for item in found]

    async def instance_types(self) -> InstanceTypeCatalogue | None:
        return None

    async def verify_config(self) -> None:
        await self._call("GET", "/catalogue")

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def make_provider(settings: Settings, *, node_name: str) -> HttpProvider:
    return HttpProvider(settings)
