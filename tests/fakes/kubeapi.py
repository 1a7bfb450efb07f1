"""A loopback kube-apiserver speaking the Kubernetes REST API for exactly the calls the
adaptor and peerpod-ctrl make, over HTTPS with a test CA and bearer tokens, so that the real
client library (TLS, auth, patch content types, watch streams) is what the tests exercise.

Served:
- core/v1: GET node, PATCH node and node status (strategic-merge, merge and JSON patch);
  GET pod, LIST pods (``fieldSelector=spec.nodeName=``); GET serviceaccount, GET secret;
- confidentialcontainers.org/v1alpha1 peerpods (namespaced): create, get, list, watch,
  update, patch, delete, with finalizers and ``deletionTimestamp`` semantics (a DELETE with
  finalizers only marks the object; it goes once its finalizers are empty) and
  ``resourceVersion`` conflicts (409);
- coordination.k8s.io/v1 leases (namespaced): create (409 AlreadyExists when it exists), get,
  update (409 Conflict on a stale ``resourceVersion``), as leader election uses them.

Every request served is recorded as a :class:`Call` (user, verb, API group, resource,
subresource), so a test can compare what the code called with the RBAC rules it ships.
Faults: ``stop()`` / ``start()`` take the listener down and bring it back on the same port;
``fail(status, verb=, resource=, times=)`` answers the next matching requests with an error;
``before(action, verb=, resource=)`` runs ``action`` just before the next matching request is
served (another client's write landing first, for races).
Strategic-merge patches are applied as JSON merge patches (enough for maps such as
annotations, the only thing the code patches that way).
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import ipaddress
import json
import ssl
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.fakes.kubepatch import ApiFailure, json_patch, merge_patch

__all__ = ["ApiFailure", "Call", "FakeKubeAPI", "json_patch", "merge_patch"]

PEERPOD_GROUP = "confidentialcontainers.org"
PEERPOD_VERSION = "v1alpha1"
CORE_KINDS = {"nodes": "Node", "pods": "Pod", "serviceaccounts": "ServiceAccount",
              "secrets": "Secret"}
# resource -> (group, version, kind) of the API groups served besides core/v1
GROUP_KINDS = {"peerpods": (PEERPOD_GROUP, PEERPOD_VERSION, "PeerPod"),
               "leases": ("coordination.k8s.io", "v1", "Lease")}


@dataclass(frozen=True, slots=True)
class Call:
    user: str
    verb: str
    group: str  # "" for core
    resource: str
    subresource: str = ""
    namespace: str = ""


@dataclass(slots=True)
class _Fault:
    status: int  # 0: no error, only ``action``
    verb: str | None
    resource: str | None
    times: int
    action: Callable[[], None] | None = None


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_tls(directory: Path) -> tuple[Path, ssl.SSLContext]:
    """A test CA (written to ``directory/ca.crt``) and a server context for 127.0.0.1."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-kube-ca")])
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    end = start + datetime.timedelta(days=1)
    ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
            .issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    ca_path = directory / "ca.crt"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "server.crt").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (directory / "server.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(directory / "server.crt", directory / "server.key")
    return ca_path, context


class FakeKubeAPI:
    """Objects are kept as dicts; ``objects[(resource, namespace, name)]``."""

    def __init__(self, workdir: Path, tokens: dict[str, str] | None = None) -> None:
        self.ca_path, self._ssl = make_tls(workdir / "kube-tls")
        self.tokens = tokens or {"adaptor-token": "cloud-api-adaptor",
                                 "ctrl-token": "peerpod-ctrl"}
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.calls: list[Call] = []
        self.changed = asyncio.Event()
        self._rv = 0
        self._history: list[tuple[int, str, dict[str, Any]]] = []
        self._watchers: list[asyncio.Queue[tuple[int, str, dict[str, Any]] | None]] = []
        self._faults: list[_Fault] = []
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self.port = 0

    # ---------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def start(self) -> None:
        if self._runner is None:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app, handle_signals=False)
            await self._runner.setup()
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self._ssl,
                                 reuse_address=True)
        await self._site.start()
        server = self._site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        """Down: the port refuses connections (open watches and kept-alive connections
        end) until ``start()``."""
        for queue in self._watchers:
            queue.put_nowait(None)
        if self._site is not None:
            await self._site.stop()
            self._site = None
        if self._runner is not None and self._runner.server is not None:
            for handler in self._runner.server.connections:
                handler.force_close()

    async def aclose(self) -> None:
        await self.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def kubeconfig(self, path: Path, token: str = "adaptor-token") -> Path:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {
                "server": self.url, "certificate-authority": str(self.ca_path)}}],
            "users": [{"name": "fake", "user": {"token": token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
        }))
        return path

    def fail(self, status: int, *, verb: str | None = None, resource: str | None = None,
             times: int = 1) -> None:
        self._faults.append(_Fault(status, verb, resource, times))

    def before(self, action: Callable[[], None], *, verb: str | None = None,
               resource: str | None = None) -> None:
        self._faults.append(_Fault(0, verb, resource, 1, action))

    # ---------------------------------------------------------------- objects
    def put(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Seed or overwrite an object (nodes, pods, serviceaccounts, secrets, peerpods,
        leases)."""
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", _now())
        group, version, kind = GROUP_KINDS.get(resource, ("", "v1", CORE_KINDS.get(resource)))
        obj.setdefault("kind", kind)
        obj.setdefault("apiVersion", f"{group}/{version}" if group else version)
        self._store(resource, obj, "ADDED")
        return obj

    def get(self, resource: str, name: str, namespace: str = "") -> dict[str, Any] | None:
        return self.objects.get((resource, namespace, name))

    def list(self, resource: str) -> list[dict[str, Any]]:
        return [o for (r, _, _), o in self.objects.items() if r == resource]

    def _store(self, resource: str, obj: dict[str, Any], event: str) -> None:
        self._rv += 1
        meta = obj["metadata"]
        meta["resourceVersion"] = str(self._rv)
        key = (resource, meta.get("namespace", ""), meta["name"])
        if event == "DELETED":
            self.objects.pop(key, None)
        else:
            self.objects[key] = obj
        if resource == "peerpods":
            item = (self._rv, event, copy.deepcopy(obj))
            self._history.append(item)
            for queue in self._watchers:
                queue.put_nowait(item)
        self.changed.set()
        self.changed = asyncio.Event()

    async def wait_for(self, predicate: Any, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                await self.changed.wait()

    # ---------------------------------------------------------------- HTTP
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        user = self.tokens.get(auth.removeprefix("Bearer "))
        if user is None:
            return _status(401, "Unauthorized", "Unauthorized")
        try:
            route = _route(request.path)
            verb = _verb(request, route)
            self.calls.append(Call(user, verb, route.group, route.resource, route.subresource,
                                   route.namespace))
            self._inject(verb, route.resource)
            if verb == "watch":
                return await self._watch(request)
            body = await request.read()
            return _json(self._serve(verb, route, request, body))
        except ApiFailure as exc:
            return _status(exc.code, exc.reason, exc.message)

    def _inject(self, verb: str, resource: str) -> None:
        for fault in self._faults:
            if fault.times > 0 and fault.verb in (None, verb) \
                    and fault.resource in (None, resource):
                fault.times -= 1
                if fault.action is not None:
                    fault.action()
                if not fault.status:
                    continue
                reason = {409: "Conflict", 500: "InternalError"}.get(fault.status, "Failure")
                raise ApiFailure(fault.status, reason, f"injected {fault.status}")

    def _serve(self, verb: str, route: _Route, request: web.Request,
               body: bytes) -> dict[str, Any]:
        key = (route.resource, route.namespace, route.name)
        if verb == "list":
            return self._list(route, request)
        if verb == "create":
            return self._create(route, json.loads(body))
        current = self.objects.get(key)
        if current is None:
            raise ApiFailure(404, "NotFound",
                             f'{route.resource} "{route.name}" not found')
        if verb == "get":
            return current
        if verb == "delete":
            return self._delete(route, current)
        if verb == "update":
            new = json.loads(body)
            if new["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
                raise _conflict(route)
        else:
            new = self._patched(route, current, request.content_type, json.loads(body))
        return self._update(route, current, new)

    def _patched(self, route: _Route, current: dict[str, Any], content_type: str,
                 patch: Any) -> dict[str, Any]:
        if content_type == "application/json-patch+json":
            return json_patch(current, patch)
        if content_type in ("application/merge-patch+json",
                            "application/strategic-merge-patch+json"):
            rv = (patch.get("metadata") or {}).get("resourceVersion")
            if rv is not None and rv != current["metadata"]["resourceVersion"]:
                raise _conflict(route)
            return merge_patch(current, patch)
        raise ApiFailure(415, "UnsupportedMediaType", f"unsupported patch type {content_type}")

    def _update(self, route: _Route, current: dict[str, Any],
                new: dict[str, Any]) -> dict[str, Any]:
        meta = new["metadata"]
        for field in ("uid", "creationTimestamp", "deletionTimestamp", "name", "namespace"):
            if field in current["metadata"]:
                meta[field] = current["metadata"][field]
        if route.subresource == "status":
            new = {**current, "status": new.get("status", {})}
        elif route.resource == "nodes" or route.resource == "peerpods":
            new["status"] = current.get("status", new.get("status"))
        gone = "deletionTimestamp" in meta and not meta.get("finalizers")
        self._store(route.resource, new, "DELETED" if gone else "MODIFIED")
        return new

    def _create(self, route: _Route, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        meta["namespace"] = route.namespace
        if (route.resource, route.namespace, meta.get("name", "")) in self.objects:
            raise ApiFailure(409, "AlreadyExists",
                             f'{route.resource} "{meta.get("name")}" already exists')
        meta.pop("resourceVersion", None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        meta.pop("deletionTimestamp", None)
        self._store(route.resource, obj, "ADDED")
        return obj

    def _delete(self, route: _Route, current: dict[str, Any]) -> dict[str, Any]:
        meta = current["metadata"]
        if meta.get("finalizers"):
            if "deletionTimestamp" not in meta:
                obj = copy.deepcopy(current)
                obj["metadata"]["deletionTimestamp"] = _now()
                self._store(route.resource, obj, "MODIFIED")
                return obj
            return current
        self._store(route.resource, current, "DELETED")
        return current

    def _list(self, route: _Route, request: web.Request) -> dict[str, Any]:
        selector = request.query.get("fieldSelector", "")
        node = selector.removeprefix("spec.nodeName=") if selector else None
        items = [o for (r, ns, _), o in sorted(self.objects.items())
                 if r == route.resource and route.namespace in ("", ns)
                 and (node is None or o.get("spec", {}).get("nodeName") == node)]
        kind = CORE_KINDS.get(route.resource) or GROUP_KINDS[route.resource][2]
        kind += "List"
        return {"kind": kind, "apiVersion": "v1", "items": items,
                "metadata": {"resourceVersion": str(self._rv)}}

    async def _watch(self, request: web.Request) -> web.StreamResponse:
        queue: asyncio.Queue[tuple[int, str, dict[str, Any]] | None] = asyncio.Queue()
        since = request.query.get("resourceVersion")
        if since:
            for item in self._history:
                if item[0] > int(since):
                    queue.put_nowait(item)
        else:
            for obj in self.list("peerpods"):
                queue.put_nowait((self._rv, "ADDED", copy.deepcopy(obj)))
        self._watchers.append(queue)
        response = web.StreamResponse()
        response.content_type = "application/json"
        await response.prepare(request)
        try:
            while (item := await queue.get()) is not None:
                line = json.dumps({"type": item[1], "object": item[2]}) + "\n"
                await response.write(line.encode())
        finally:
            self._watchers.remove(queue)
        return response


@dataclass(frozen=True, slots=True)
class _Route:
    group: str
    resource: str
    namespace: str = ""
    name: str = ""
    subresource: str = ""


def _route(path: str) -> _Route:
    parts = [p for p in path.split("/") if p]
    served = {(group, version) for group, version, _ in GROUP_KINDS.values()}
    if parts[:2] == ["api", "v1"]:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and tuple(parts[1:3]) in served:
        group, rest = parts[1], parts[3:]
    else:
        raise ApiFailure(404, "NotFound", f"no API at {path}")
    namespace = ""
    if len(rest) >= 2 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        raise ApiFailure(404, "NotFound", f"no API at {path}")
    return _Route(group, rest[0], namespace, *rest[1:])


def _verb(request: web.Request, route: _Route) -> str:
    method = request.method
    if not route.name:
        if method == "GET":
            return "watch" if request.query.get("watch") in ("true", "1") else "list"
        if method == "POST":
            return "create"
    else:
        verb = {"GET": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method)
        if verb is not None:
            return verb
    raise ApiFailure(405, "MethodNotAllowed", f"{method} {request.path}")


def _conflict(route: _Route) -> ApiFailure:
    return ApiFailure(409, "Conflict", f'Operation cannot be fulfilled on {route.resource} '
                      f'"{route.name}": the object has been modified; please apply your '
                      'changes to the latest version and try again')


def _json(obj: Any, status: int = 200) -> web.Response:
    # Exactly "application/json", as the API server sends it (no charset parameter).
    return web.Response(body=json.dumps(obj).encode(), status=status,
                        headers={"Content-Type": "application/json"})


def _status(code: int, reason: str, message: str) -> web.Response:
    return _json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                  "message": message, "reason": reason, "code": code}, status=code)
