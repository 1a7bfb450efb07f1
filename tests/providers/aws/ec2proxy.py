"""A loopback HTTP proxy in front of moto_server that records and disturbs EC2 traffic.

It speaks the EC2 query protocol on both sides: every request body is parsed (form
encoded), recorded, then either answered with an injected EC2 error document or forwarded
to moto. It can also emulate EC2's ClientToken idempotency for RunInstances (moto ignores
the token), rewrite responses, and it measures the time spent waiting on moto.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import aiohttp
from aiohttp import web

ERROR_XML = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error>"
    "</Errors><RequestID>{request_id}</RequestID></Response>"
)


@dataclass
class Fault:
    """Answer ``action`` (every action when ``None``) with an EC2 error.

    ``rate`` is the probability per matching request; ``limit`` caps how many are injected.
    With ``after_forward`` the request reaches moto first and only the answer is replaced,
    as when a response is lost on the way back.
    """

    code: str
    status: int
    action: str | None = None
    rate: float = 1.0
    limit: int | None = None
    after_forward: bool = False
    message: str = "injected by the test proxy"
    injected: int = 0


@dataclass
class Recorded:
    action: str
    params: dict[str, str]
    status: int = 0
    injected: str = ""


Rewriter = Callable[[str, bytes], bytes]


@dataclass
class Ec2Proxy:
    upstream: str
    seed: int = 1
    faults: list[Fault] = field(default_factory=list)
    rewriters: list[Rewriter] = field(default_factory=list)
    honour_client_token: bool = False
    delays: dict[str, float] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    upstream_seconds: float = 0.0
    upstream_calls: int = 0
    url: str = ""
    _tokens: dict[str, bytes] = field(default_factory=dict)
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None
    _rng: random.Random = field(default_factory=random.Random)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> str:
        self._rng = random.Random(self.seed)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64),
            timeout=aiohttp.ClientTimeout(total=60),
        )
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def calls(self, action: str) -> list[Recorded]:
        return [r for r in self.requests if r.action == action]

    async def wait_for(self, action: str) -> None:
        """Return once a request for ``action`` has arrived."""
        while not self.calls(action):
            self._arrived.clear()
            await self._arrived.wait()

    def _pick_fault(self, action: str, after_forward: bool) -> Fault | None:
        for fault in self.faults:
            if fault.after_forward != after_forward:
                continue
            if fault.action is not None and fault.action != action:
                continue
            if fault.limit is not None and fault.injected >= fault.limit:
                continue
            if self._rng.random() < fault.rate:
                fault.injected += 1
                return fault
        return None

    def _error(self, record: Recorded, fault: Fault) -> web.Response:
        record.status = fault.status
        record.injected = fault.code
        body = ERROR_XML.format(
            code=fault.code, message=fault.message, request_id=f"proxy-{len(self.requests)}"
        )
        return web.Response(status=fault.status, body=body.encode(), content_type="text/xml")

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        params = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        action = params.get("Action", "")
        record = Recorded(action=action, params=params)
        self.requests.append(record)
        self._arrived.set()

        fault = self._pick_fault(action, after_forward=False)
        if fault is not None:
            return self._error(record, fault)

        token = params.get("ClientToken", "") if action == "RunInstances" else ""
        if self.honour_client_token and token in self._tokens:
            record.status = 200
            return web.Response(body=self._tokens[token], content_type="text/xml")

        if action in self.delays:
            await asyncio.sleep(self.delays[action])
        status, payload, content_type = await self._forward(request, body)
        for rewrite in self.rewriters:
            payload = rewrite(action, payload)
        if self.honour_client_token and token and status == 200:
            self._tokens[token] = payload

        fault = self._pick_fault(action, after_forward=True)
        if fault is not None:
            return self._error(record, fault)
        record.status = status
        return web.Response(status=status, body=payload, content_type=content_type)

    async def _forward(self, request: web.Request, body: bytes) -> tuple[int, bytes, str]:
        assert self._session is not None
        headers = {
            k: v for k, v in request.headers.items()
            if k.lower() not in ("host", "content-length", "transfer-encoding", "connection")
        }
        started = time.perf_counter()
        async with self._session.request(
            request.method, self.upstream + request.path_qs, data=body, headers=headers
        ) as resp:
            payload = await resp.read()
            status = resp.status
            content_type = resp.content_type or "text/xml"
        self.upstream_seconds += time.perf_counter() - started
        self.upstream_calls += 1
        return status, payload, content_type

