"""A fake cloud behind a loopback HTTP API, so that its VMs outlive adaptor processes.

The test process runs :class:`CloudAPI` (a :class:`tests.fakes.cloud.FakeCloud` whose pod VMs
are test forwarders + test agents on 127.0.0.N); the adaptor under test, a subprocess, talks
to it through ``tests.fakes.httpprovider``. Killing and restarting the adaptor leaves the VMs
running, as in a real cloud.

Routes (JSON): ``POST /instances`` create, ``DELETE /instances/{id}``, ``GET /instances``
(``?tags=<json>``), ``GET /catalogue``. ``slow_create`` makes a create answer only that many
seconds after the instance exists (a cloud API that is slow to return), ``fail_delete_times``
makes the next deletes fail with a server error.
"""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import datetime
from typing import Any

from aiohttp import web

from providers.base import Instance, InstanceRequest, InstanceSpec, ProviderError
from tests.fakes.cloud import FakeCloud


def instance_to_json(instance: Instance) -> dict[str, Any]:
    return {
        "id": instance.id,
        "name": instance.name,
        "ips": [str(ip) for ip in instance.ips],
        "tags": dict(instance.tags),
        "created_at": instance.created_at.isoformat() if instance.created_at else None,
    }


def request_from_json(data: dict[str, Any]) -> InstanceRequest:
    spec = dict(data.get("spec") or {})
    spec["volumes"] = tuple(spec.get("volumes", ()))
    return InstanceRequest(
        name=data["name"],
        sandbox_id=data["sandbox_id"],
        pod_name=data["pod_name"],
        pod_namespace=data["pod_namespace"],
        user_data=base64.b64decode(data["user_data"]),
        spec=InstanceSpec(**spec),
        tags=dict(data.get("tags") or {}),
    )


class CloudAPI:
    def __init__(self, workdir: str, *, forwarder_port: int | None = None) -> None:
        self.cloud = FakeCloud(workdir, port=forwarder_port)
        self.slow_create = 0.0
        self.fail_delete_times = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    @property
    def provider(self) -> Any:
        return self.cloud.provider

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/instances", self._create)
        app.router.add_delete("/instances/{id}", self._delete)
        app.router.add_get("/instances", self._list)
        app.router.add_get("/catalogue", self._catalogue)
        # A slow create still pending when the test ends is not waited for.
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.2)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        return self.url

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.cloud.aclose()

    @staticmethod
    def _error(exc: ProviderError) -> web.Response:
        return web.json_response({"kind": type(exc).__name__, "message": str(exc)}, status=500)

    async def _create(self, request: web.Request) -> web.Response:
        data = await request.json()
        try:
            instance = await self.provider.create_instance(request_from_json(data))
        except ProviderError as exc:
            return self._error(exc)
        if self.slow_create:
            await asyncio.sleep(self.slow_create)
        return web.json_response(instance_to_json(instance))

    async def _delete(self, request: web.Request) -> web.Response:
        if self.fail_delete_times > 0:
            self.fail_delete_times -= 1
            return web.json_response(
                {"kind": "ProviderUnavailable", "message": "injected delete failure"},
                status=503)
        try:
            await self.provider.delete_instance(request.match_info["id"])
        except ProviderError as exc:
            return self._error(exc)
        return web.json_response({})

    async def _list(self, request: web.Request) -> web.Response:
        tags = json.loads(request.query.get("tags", "{}"))
        found = await self.provider.list_instances(tags)
        return web.json_response([instance_to_json(i) for i in found])

    async def _catalogue(self, request: web.Request) -> web.Response:
        return web.json_response(None)


def parse_created_at(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None
