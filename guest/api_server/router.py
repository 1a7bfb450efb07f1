"""Routes of api-server-rest, with upstream's status codes and bodies.

Unlike upstream, ``/cdh/resource/`` refuses ``..``/``.`` segments and paths that are not
exactly ``<repo>/<type>/<tag>`` with 400.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import logging
from typing import Any

from aiohttp import web

from guest.api_server.backends import AaBackend, BackendError, CdhBackend

log = logging.getLogger(__name__)

VERSION = "peerpods-guest-components 0.1.0"
OCTET = "application/octet-stream"
AAEL_RESULTS = {
    0: '{"success":"true"}',
    1: '{"success":"false","message": "The platform does not support runtime measurement"}',
    2: '{"success":"false","message": "Attestation Agent does not enable eventlog recording"}',
}
AAEL_UNKNOWN = '{"success":"false","message": "Unknown runtime measurement result"}'


def _text(status: int, body: str) -> web.Response:
    return web.Response(status=status, body=body.encode())


BAD_REQUEST = (400, "BAD REQUEST")
NOT_FOUND = (404, "URL NOT FOUND")


def decode_runtime_data(value: str, encoding: str | None) -> bytes:
    if encoding is None:
        return value.encode()
    if encoding == "base64":
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    raise ValueError(f"unsupported runtime_data encoding: {encoding}")


def _loopback(request: web.Request) -> bool:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if not peer:
        return False
    try:
        return ipaddress.ip_address(peer[0]).is_loopback
    except ValueError:
        return False


class Router:
    def __init__(self, aa: AaBackend | None, cdh: CdhBackend | None, feature: str) -> None:
        self.aa = aa
        self.cdh = cdh
        self.feature = feature

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.route)
        return app

    async def route(self, request: web.Request) -> web.StreamResponse:
        if not _loopback(request):
            return _text(403, "Forbidden")
        path = request.path
        if path == "/info":
            if request.method != "GET":
                return _text(405, "Method Not Allowed")
            return await self._info()
        root, _, rest = path[1:].partition("/")
        if root == "aa":
            if self.aa is None:
                return _text(404, "Attestation Feature Not Enabled")
            return await self._aa(self.aa, request, rest)
        if root == "cdh":
            if self.cdh is None:
                return _text(404, "Resource Feature Not Enabled")
            return await self._cdh(self.cdh, request, rest)
        return _text(*NOT_FOUND)

    async def _info(self) -> web.Response:
        info: dict[str, Any] = {"version": VERSION}
        if self.aa is not None:
            try:
                info["tee"] = await self.aa.get_tee_type()
                tees = await self.aa.get_additional_tees()
            except BackendError as exc:
                return _text(500, str(exc))
            if tees:
                info["additional_tees"] = tees
        info["feature"] = self.feature
        return web.Response(body=json.dumps(info).encode(), content_type="application/json")

    async def _aa(self, aa: AaBackend, request: web.Request, rest: str) -> web.Response:
        query, method = request.query, request.method
        try:
            if rest == "token" and method == "GET":
                log.info("Get token")
                if "token_type" not in query:
                    return _text(*BAD_REQUEST)
                return _octet(await aa.get_token(query["token_type"]))
            if rest in ("evidence", "additional-evidence") and method == "GET":
                if "runtime_data" not in query:
                    return _text(*BAD_REQUEST)
                try:
                    data = decode_runtime_data(query["runtime_data"], query.get("encoding"))
                except (ValueError, binascii.Error):
                    return _text(*BAD_REQUEST)
                if rest == "evidence":
                    return _octet(await aa.get_evidence(data))
                return _octet(await aa.get_additional_evidence(data))
            if rest == "aael" and method == "POST":
                return await self._aael(aa, request)
        except BackendError as exc:
            log.error("AA request %s failed: %s", rest, exc)
            return _text(500, str(exc))
        return _text(*NOT_FOUND)

    async def _aael(self, aa: AaBackend, request: web.Request) -> web.Response:
        try:
            entry = json.loads(await request.read())
            domain, operation, content = entry["domain"], entry["operation"], entry["content"]
            if not all(isinstance(v, str) for v in (domain, operation, content)):
                raise TypeError("domain, operation and content must be strings")
        except (ValueError, KeyError, TypeError) as exc:
            return _text(500, f"Illegal AAEL eventry format: {exc}")
        result = await aa.extend_runtime_measurement(domain, operation, content)
        body = AAEL_RESULTS.get(result, AAEL_UNKNOWN)
        return web.Response(body=body.encode(), content_type="application/json")

    async def _cdh(self, cdh: CdhBackend, request: web.Request, rest: str) -> web.Response:
        api, sep, resource_path = rest.partition("/")
        if api != "resource" or not sep:
            return _text(*NOT_FOUND)
        segments = resource_path.split("/")
        if len(segments) != 3 or any(s in ("", ".", "..") for s in segments):
            return _text(*BAD_REQUEST)
        log.info("Get resource")
        try:
            return _octet(await cdh.get_resource(f"kbs:///{resource_path}"))
        except BackendError as exc:
            log.error("Failed to get resource %s: %s", resource_path, exc)
            return _text(500, str(exc))


def _octet(data: bytes) -> web.Response:
    return web.Response(body=data, content_type=OCTET)
