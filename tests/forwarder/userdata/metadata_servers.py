"""Loopback servers speaking the AWS, Azure and GCP instance metadata protocols.

Each checks what the real service checks (IMDSv2 token, ``Metadata: true``,
``Metadata-Flavor: Google``) and records every request it receives.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass
class Script:
    """Canned failures before the real answer: each item is an HTTP status, or a body to
    send instead of the user-data."""

    before: list[int | bytes] = field(default_factory=list)

    def next(self) -> int | bytes | None:
        return self.before.pop(0) if self.before else None


def _seen(request: web.Request) -> Seen:
    return Seen(request.method, request.path, dict(request.query), dict(request.headers))


class AwsImds:
    """``PUT /latest/api/token`` then ``GET /latest/user-data`` (raw body).

    ``imdsv2=True``: a valid token is required (401 without). ``imdsv2=False``: the token
    endpoint answers 404 (as an IMDS without v2) and user-data is served without a token.
    """

    def __init__(self, user_data: bytes, *, imdsv2: bool = True, token: str = "t0ken") -> None:
        self.user_data = user_data
        self.imdsv2 = imdsv2
        self.token = token
        self.script = Script()
        self.requests: list[Seen] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_put("/latest/api/token", self._token)
        app.router.add_get("/latest/user-data", self._user_data)
        return app

    async def _token(self, request: web.Request) -> web.Response:
        self.requests.append(_seen(request))
        if not self.imdsv2:
            return web.Response(status=404)
        ttl = request.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
        if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
            return web.Response(status=400)
        return web.Response(text=self.token)

    async def _user_data(self, request: web.Request) -> web.Response:
        self.requests.append(_seen(request))
        given = request.headers.get("X-aws-ec2-metadata-token")
        if self.imdsv2 and given != self.token:
            return web.Response(status=401)
        canned = self.script.next()
        if isinstance(canned, int):
            return web.Response(status=canned)
        return web.Response(body=canned if canned is not None else self.user_data)

    def user_data_requests(self) -> Iterator[Seen]:
        return (r for r in self.requests if r.path == "/latest/user-data")


class AzureImds:
    """``GET /metadata/instance/compute/userData?api-version=...&format=text``, base64 body."""

    def __init__(self, user_data: bytes) -> None:
        self.user_data = user_data
        self.script = Script()
        self.requests: list[Seen] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metadata/instance/compute/userData", self._user_data)
        return app

    async def _user_data(self, request: web.Request) -> web.Response:
        self.requests.append(_seen(request))
        if request.headers.get("Metadata") != "true":
            return web.json_response(
                {"error": "Bad request. Required metadata header not specified"}, status=400
            )
        if request.query.get("api-version") != "2021-01-01":
            return web.json_response({"error": "Bad request. api-version is invalid"}, status=400)
        if request.query.get("format") != "text":
            return web.json_response({"error": "Bad request. format is invalid"}, status=400)
        canned = self.script.next()
        if isinstance(canned, int):
            return web.Response(status=canned)
        body = canned if canned is not None else base64.b64encode(self.user_data)
        return web.Response(body=body, content_type="text/plain")


class GcpMetadata:
    """``GET /computeMetadata/v1/instance/attributes/user-data``, base64 body."""

    def __init__(self, user_data: bytes) -> None:
        self.user_data = user_data
        self.script = Script()
        self.requests: list[Seen] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/computeMetadata/v1/instance/attributes/user-data", self._user_data)
        return app

    async def _user_data(self, request: web.Request) -> web.Response:
        self.requests.append(_seen(request))
        headers = {"Metadata-Flavor": "Google"}
        if request.headers.get("Metadata-Flavor") != "Google":
            return web.Response(status=403, text="Missing Metadata-Flavor:Google header.")
        if "X-Forwarded-For" in request.headers:
            return web.Response(status=403, headers=headers)
        canned = self.script.next()
        if isinstance(canned, int):
            return web.Response(status=canned, headers=headers)
        body = canned if canned is not None else base64.b64encode(self.user_data)
        return web.Response(body=body, headers=headers, content_type="application/text")
