"""A loopback Compute Engine REST endpoint (``/compute/v1``), for the real google-cloud-compute
SDK to talk to; no GCE emulator exists.

It serves the calls the GCP provider makes, with GCE's paths, JSON shapes (camelCase, int64
as strings) and refusals: an insert body missing what GCE requires, an unknown field name, a
bad enum spelling (``IPV4_Only``), ``pd-standard`` on c3, a confidential VM without
``onHostMaintenance=TERMINATE`` or on a machine family that cannot run it, unknown images,
networks, subnetworks, machine types and resource-manager tags. Operations report RUNNING for
``polls_before_done`` looks (GET or ``/wait``) and then DONE; ``/wait`` answers at once, as
GCE may. Instances exist from the insert (PROVISIONING) and vanish when their delete is done.
Faults: HTTP errors queued per action (429, 403 ``rateLimitExceeded``), and an insert whose
operation ends in ``ZONE_RESOURCE_POOL_EXHAUSTED``. Every request is recorded.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from ipaddress import IPv4Network
from typing import Any

from aiohttp import web

from tests.providers.gcp.validate import Catalogue, Invalid, check_insert

BASE = "/compute/v1"
_FILTER_TERM = re.compile(r'labels\.([a-z0-9_-]+)\s*=\s*"([^"]*)"')


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    body: Any


@dataclass
class Operation:
    name: str
    kind: str  # insert | delete
    target: str  # instance name
    target_id: str
    polls_left: int
    error: tuple[str, str, int] | None = None  # code, message, http status
    done: bool = False


@dataclass
class Faults:
    http: dict[str, list[tuple[int, str]]] = field(default_factory=dict)  # action -> queue
    exhaust_next_insert: bool = False
    lose_insert_answers: int = 0  # inserts carried out but answered 503 (a lost answer)

    def queue(self, action: str, status: int, reason: str, times: int = 1) -> None:
        self.http.setdefault(action, []).extend([(status, reason)] * times)


class ComputeServer:
    def __init__(self, *, project: str = "pp-project", zone: str = "us-central1-a",
                 subnet: str = "10.128.0.0/20", nat: str = "198.51.100.0/24") -> None:
        self.project = project
        self.zone = zone
        self.catalogue = Catalogue(project=project, zone=zone)
        self.instances: dict[str, dict[str, Any]] = {}
        self.operations: dict[str, Operation] = {}
        self.request_ids: dict[str, str] = {}
        self.requests: list[Recorded] = []
        self.faults = Faults()
        self.polls_before_done = 2
        self.insert_polls = 2
        self.page_limit = 500  # GCE's largest page; lower it to exercise paging
        self.url = ""
        self._ids = itertools.count(4_000_000_000_000_000_001)
        self._private = _hosts(subnet)
        self._public = _hosts(nat)
        self._runner: web.AppRunner | None = None
        # Called with the instance's JSON when its insert is done / once it is gone.
        self.on_running: Callable[[dict[str, Any]], None] = lambda _instance: None
        self.on_gone: Callable[[dict[str, Any]], None] = lambda _instance: None

    # --------------------------------------------------------------- server

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application(middlewares=[self._record])
        app.router.add_route("*", BASE + "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0]
        self.url = f"http://{host}:{bound[1]}"
        return self.url

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.json() if request.body_exists else None
        self.requests.append(Recorded(request.method, request.path, dict(request.query), body))
        return await handler(request)

    def calls(self, method: str, suffix: str = "") -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path.endswith(suffix)]

    # ------------------------------------------------------------- dispatch

    async def _dispatch(self, request: web.Request) -> web.Response:
        parts = request.match_info["tail"].split("/")
        route = _route(request.method, parts)
        if route is None:
            return _error(404, "notFound", f"no such path {request.path}")
        action, args = route
        queued = self.faults.http.get(action)
        if queued:
            status, reason = queued.pop(0)
            return _error(status, reason, "Rate Limit Exceeded" if status in (403, 429)
                          else reason)
        if args.get("project") != self.project:
            return _error(404, "notFound", f"The resource 'projects/{args.get('project')}' "
                          "was not found")
        try:
            handler = getattr(self, "_" + action)
            body = await request.json() if request.body_exists else None
            return web.json_response(handler(args, dict(request.query), body))
        except Invalid as exc:
            return _error(exc.status, exc.reason, exc.message)

    # ------------------------------------------------------------- handlers

    def _project(self, args: dict[str, str], query: Any, body: Any) -> dict[str, Any]:
        return {"kind": "compute#project", "name": self.project, "id": "1234567890"}

    def _zone(self, args: dict[str, str], query: Any, body: Any) -> dict[str, Any]:
        self._need_zone(args)
        return {"kind": "compute#zone", "name": self.zone, "status": "UP",
                "region": f"{self.url}{BASE}/projects/{self.project}/regions/"
                          f"{self.catalogue.region}"}

    def _network(self, args: dict[str, str], query: Any, body: Any) -> dict[str, Any]:
        return self.catalogue.network(args["name"])

    def _subnetwork(self, args: dict[str, str], query: Any, body: Any) -> dict[str, Any]:
        return self.catalogue.subnetwork(args["region"], args["name"])

    def _image(self, args: dict[str, str], query: Any, body: Any) -> dict[str, Any]:
        return self.catalogue.image(args["name"])

    def _image_family(self, args: dict[str, str], query: Any, body: Any) -> dict[str, Any]:
        return self.catalogue.image_family(args["name"])

    def _machine_type(self, args: dict[str, str], query: Any, body: Any) -> dict[str, Any]:
        self._need_zone(args)
        return self.catalogue.machine_type_json(args["name"])

    def _insert(self, args: dict[str, str], query: dict[str, str], body: Any) -> dict[str, Any]:
        self._need_zone(args)
        rid = query.get("requestId", "")
        if rid and rid in self.request_ids:
            return self._answer_insert(self.operations[self.request_ids[rid]])
        check_insert(body, self.catalogue)
        name = body["name"]
        if name in self.instances:
            raise Invalid(409, "alreadyExists", f"The resource 'projects/{self.project}/zones/"
                          f"{self.zone}/instances/{name}' already exists")
        instance = self._materialise(body)
        self.instances[name] = instance
        op = self._new_op("insert", instance, self.insert_polls)
        if self.faults.exhaust_next_insert:
            self.faults.exhaust_next_insert = False
            op.error = ("ZONE_RESOURCE_POOL_EXHAUSTED",
                        f"The zone 'projects/{self.project}/zones/{self.zone}' does not have "
                        "enough resources available to fulfill the request.  Try a different "
                        "zone, or try again later.", 503)
        if rid:
            self.request_ids[rid] = op.name
        return self._answer_insert(op)

    def _answer_insert(self, op: Operation) -> dict[str, Any]:
        if self.faults.lose_insert_answers > 0:
            self.faults.lose_insert_answers -= 1
            raise Invalid(503, "backendError", "Backend Error")
        return self._op_json(op)

    def _get(self, args: dict[str, str], query: Any, body: Any) -> dict[str, Any]:
        self._need_zone(args)
        return self._find(args["name"])

    def _delete(self, args: dict[str, str], query: Any, body: Any) -> dict[str, Any]:
        self._need_zone(args)
        instance = self._find(args["name"])
        instance["status"] = "STOPPING"
        return self._op_json(self._new_op("delete", instance, self.polls_before_done))

    def _list(self, args: dict[str, str], query: dict[str, str], body: Any) -> dict[str, Any]:
        self._need_zone(args)
        wanted = _parse_filter(query.get("filter", ""))
        found = [i for i in self.instances.values()
                 if all(i.get("labels", {}).get(k) == v for k, v in wanted.items())]
        size = min(int(query.get("maxResults", "500")), self.page_limit)
        start = int(query.get("pageToken") or 0)
        answer: dict[str, Any] = {"kind": "compute#instanceList", "id": "instances",
                                  "items": found[start:start + size]}
        if start + size < len(found):
            answer["nextPageToken"] = str(start + size)
        return answer

    def _operation(self, args: dict[str, str], query: Any, body: Any) -> dict[str, Any]:
        self._need_zone(args)
        op = self.operations.get(args["name"])
        if op is None:
            raise Invalid(404, "notFound", f"operation {args['name']} was not found")
        self._advance(op)
        return self._op_json(op)

    _wait = _operation

    # -------------------------------------------------------------- helpers

    def _need_zone(self, args: dict[str, str]) -> None:
        if args.get("zone", self.zone) != self.zone:
            raise Invalid(404, "notFound", f"The resource 'projects/{self.project}/zones/"
                          f"{args['zone']}' was not found")

    def _find(self, name_or_id: str) -> dict[str, Any]:
        for instance in self.instances.values():
            if name_or_id in (instance["name"], instance["id"]):
                return instance
        raise Invalid(404, "notFound", f"The resource 'projects/{self.project}/zones/"
                      f"{self.zone}/instances/{name_or_id}' was not found")

    def _materialise(self, body: dict[str, Any]) -> dict[str, Any]:
        zone_url = f"{self.url}{BASE}/projects/{self.project}/zones/{self.zone}"
        nics = []
        for n, nic in enumerate(body["networkInterfaces"]):
            made = {**nic, "name": f"nic{n}", "networkIP": str(next(self._private)),
                    "network": self.catalogue.network_url(nic["network"], self.url)}
            made["accessConfigs"] = [{**a, "kind": "compute#accessConfig"}
                                     for a in nic.get("accessConfigs", ())]
            nics.append(made)
        stored = {k: v for k, v in body.items() if k != "params"}  # input only
        return {
            **stored, "kind": "compute#instance", "id": str(next(self._ids)),
            "creationTimestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "status": "PROVISIONING", "zone": zone_url,
            "machineType": f"{zone_url}/machineTypes/"
                           f"{self.catalogue.resolve(body['machineType'], 'machineTypes')}",
            "networkInterfaces": nics, "selfLink": f"{zone_url}/instances/{body['name']}",
        }

    def _new_op(self, kind: str, instance: dict[str, Any], polls: int) -> Operation:
        op = Operation(name=f"operation-{next(self._ids)}-{kind}", kind=kind,
                       target=instance["name"], target_id=instance["id"], polls_left=polls)
        self.operations[op.name] = op
        return op

    def _advance(self, op: Operation) -> None:
        if op.done:
            return
        if op.polls_left > 0:
            op.polls_left -= 1
            return
        op.done = True
        instance = self.instances.get(op.target)
        if instance is None or instance["id"] != op.target_id:
            return
        if op.kind == "delete" or op.error is not None:
            del self.instances[op.target]
            self.on_gone(instance)
            return
        instance["status"] = "RUNNING"
        for nic in instance["networkInterfaces"]:
            for access in nic["accessConfigs"]:
                access["natIP"] = str(next(self._public))
        self.on_running(instance)

    def _op_json(self, op: Operation) -> dict[str, Any]:
        zone_url = f"{self.url}{BASE}/projects/{self.project}/zones/{self.zone}"
        answer: dict[str, Any] = {
            "kind": "compute#operation", "id": op.name.split("-")[1], "name": op.name,
            "zone": zone_url, "operationType": op.kind, "targetId": op.target_id,
            "targetLink": f"{zone_url}/instances/{op.target}",
            "status": "DONE" if op.done else "RUNNING", "progress": 100 if op.done else 0,
            "selfLink": f"{zone_url}/operations/{op.name}",
        }
        if op.done and op.error is not None:
            code, message, status = op.error
            answer["error"] = {"errors": [{"code": code, "message": message}]}
            answer["httpErrorStatusCode"] = status
            answer["httpErrorMessage"] = "SERVICE UNAVAILABLE" if status == 503 else "ERROR"
        return answer


def _hosts(cidr: str) -> Iterator[Any]:
    hosts = IPv4Network(cidr).hosts()
    next(hosts)  # the gateway
    return hosts


def _route(method: str, parts: list[str]) -> tuple[str, dict[str, str]] | None:
    """(action, path arguments) for a /compute/v1 path, as GCE lays them out."""
    if len(parts) < 2 or parts[0] != "projects":
        return None
    args = {"project": parts[1]}
    rest = parts[2:]
    table: list[tuple[str, list[str], str]] = [
        ("GET", [], "project"),
        ("GET", ["zones", "{zone}"], "zone"),
        ("GET", ["global", "networks", "{name}"], "network"),
        ("GET", ["regions", "{region}", "subnetworks", "{name}"], "subnetwork"),
        ("GET", ["global", "images", "family", "{name}"], "image_family"),
        ("GET", ["global", "images", "{name}"], "image"),
        ("GET", ["zones", "{zone}", "machineTypes", "{name}"], "machine_type"),
        ("POST", ["zones", "{zone}", "instances"], "insert"),
        ("GET", ["zones", "{zone}", "instances"], "list"),
        ("GET", ["zones", "{zone}", "instances", "{name}"], "get"),
        ("DELETE", ["zones", "{zone}", "instances", "{name}"], "delete"),
        ("GET", ["zones", "{zone}", "operations", "{name}"], "operation"),
        ("POST", ["zones", "{zone}", "operations", "{name}", "wait"], "wait"),
    ]
    for verb, pattern, action in table:
        if verb != method or len(pattern) != len(rest):
            continue
        found = dict(args)
        for want, got in zip(pattern, rest, strict=True):
            if want.startswith("{"):
                found[want[1:-1]] = got
            elif want != got:
                break
        else:
            return action, found
    return None


def _parse_filter(text: str) -> dict[str, str]:
    """``labels.K="V"`` terms joined by AND (what the provider sends); anything else is a 400."""
    if not text.strip():
        return {}
    terms = [t.strip() for t in text.split(" AND ")]
    wanted: dict[str, str] = {}
    for term in terms:
        match = _FILTER_TERM.fullmatch(term)
        if match is None:
            raise Invalid(400, "invalid", f"Invalid list filter expression '{text}'.")
        wanted[match.group(1)] = match.group(2)
    return wanted


def _error(status: int, reason: str, message: str) -> web.Response:
    return web.json_response(
        {"error": {"code": status, "message": message,
                   "errors": [{"message": message, "domain": "global", "reason": reason}]}},
        status=status,
    )
