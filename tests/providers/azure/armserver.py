"""A loopback HTTPS server speaking the ARM REST protocol azure-mgmt-compute and
azure-mgmt-network use for the provider's calls, and the Entra token endpoint
ClientSecretCredential calls (authority pointed here, instance discovery off).

Requests must carry the api-version the SDK sends and a bearer token this server issued.
Long-running operations answer 201/202 with ``Azure-AsyncOperation`` and report
``InProgress`` a few times before they end. Every ARM request is recorded.
"""

from __future__ import annotations

import json
import re
import ssl
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.forwarder.apf.helpers import issue_server_cert, make_ca
from tests.providers.azure.armstate import (
    COMPUTE_API,
    DISKS_API,
    GALLERY_API,
    MAX_DATA_DISKS,
    NETWORK_API,
    SIZES,
    SKUS_API,
    ArmError,
    ArmState,
)

Handler = Callable[[web.Request, dict[str, str]], Awaitable[web.Response]]
SUB = r"/subscriptions/(?P<sub>[^/]+)"
RG = SUB + r"/resourceGroups/(?P<rg>[^/]+)"
COMPUTE = RG + r"/providers/Microsoft\.Compute"
NETWORK = RG + r"/providers/Microsoft\.Network"


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    api_version: str
    status: int


@dataclass
class ArmServer:
    state: ArmState
    host: str = "127.0.0.1"
    port: int = 0
    seen: list[Seen] = field(default_factory=list)
    token_requests: int = 0
    ca_file: str = ""
    _runner: web.AppRunner | None = None
    _dir: Any = None
    _routes: list[tuple[str, re.Pattern[str], str, Handler]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    async def start(self) -> ArmServer:
        self._dir = tempfile.TemporaryDirectory(prefix="armserver-")
        ca, ca_key = make_ca("loopback ARM")
        server = issue_server_cert(ca, ca_key, "localhost")
        base = Path(self._dir.name)
        (base / "ca.pem").write_text(ca.cert_pem)
        (base / "cert.pem").write_text(server.cert_pem)
        (base / "key.pem").write_text(server.key_pem)
        self.ca_file = str(base / "ca.pem")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(base / "cert.pem", base / "key.pem")
        self._install_routes()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._dir is not None:
            self._dir.cleanup()

    def calls(self, method: str, fragment: str) -> list[Seen]:
        return [s for s in self.seen if s.method == method and fragment in s.path]

    # --------------------------------------------------------------- routing

    def _route(self, method: str, pattern: str, api: str, handler: Handler) -> None:
        self._routes.append((method, re.compile(pattern + "$", re.IGNORECASE), api, handler))

    def _install_routes(self) -> None:
        r = self._route
        r("GET", r"/(?P<tenant>[^/]+)/v2\.0/\.well-known/openid-configuration", "",
          self._openid)
        r("POST", r"/(?P<tenant>[^/]+)/oauth2/v2\.0/token", "", self._token)
        r("PUT", COMPUTE + r"/virtualMachines/(?P<name>[^/]+)", COMPUTE_API, self._put_vm)
        r("GET", COMPUTE + r"/virtualMachines/(?P<name>[^/]+)", COMPUTE_API, self._get_vm)
        r("DELETE", COMPUTE + r"/virtualMachines/(?P<name>[^/]+)", COMPUTE_API, self._del_vm)
        r("GET", COMPUTE + r"/virtualMachines", COMPUTE_API, self._list_vms)
        r("GET", SUB + r"/providers/Microsoft\.Compute/locations/(?P<loc>[^/]+)/operations/"
          r"(?P<op>[^/]+)", COMPUTE_API, self._operation)
        r("GET", SUB + r"/providers/Microsoft\.Compute/locations/(?P<loc>[^/]+)/vmSizes",
          COMPUTE_API, self._vm_sizes)
        r("GET", SUB + r"/providers/Microsoft\.Compute/skus", SKUS_API, self._skus)
        r("GET", COMPUTE + r"/images/(?P<name>[^/]+)", COMPUTE_API, self._image)
        r("GET", COMPUTE + r"/galleries/[^/]+/images/[^/]+/versions/[^/]+", GALLERY_API,
          self._image)
        r("GET", SUB + r"/providers/Microsoft\.Compute/locations/(?P<loc>[^/]+)/"
          r"communityGalleries/(?P<g>[^/]+)/images/(?P<i>[^/]+)/versions/(?P<v>[^/]+)",
          GALLERY_API, self._community_image)
        r("GET", COMPUTE + r"/disks/(?P<name>[^/]+)", DISKS_API, self._get_disk)
        r("DELETE", COMPUTE + r"/disks/(?P<name>[^/]+)", DISKS_API, self._del_disk)
        r("GET", NETWORK + r"/networkInterfaces/(?P<name>[^/]+)", NETWORK_API, self._get_nic)
        r("DELETE", NETWORK + r"/networkInterfaces/(?P<name>[^/]+)", NETWORK_API,
          self._del_nic)
        r("GET", NETWORK + r"/networkInterfaces", NETWORK_API, self._list_nics)
        r("GET", NETWORK + r"/publicIPAddresses/(?P<name>[^/]+)", NETWORK_API, self._get_pip)
        r("GET", NETWORK + r"/virtualNetworks/[^/]+/subnets/[^/]+", NETWORK_API,
          self._exists("subnets"))
        r("GET", NETWORK + r"/networkSecurityGroups/[^/]+", NETWORK_API, self._exists("nsgs"))

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        api = request.query.get("api-version", "")
        for method, pattern, want_api, handler in self._routes:
            match = pattern.match(request.path)
            if match is None or method != request.method:
                continue
            try:
                response = await self._checked(request, match.groupdict(), want_api, handler)
            except ArmError as exc:
                response = web.json_response(exc.body(), status=exc.status)
            if want_api:
                self.seen.append(Seen(request.method, request.path, api, response.status))
            return response
        self.seen.append(Seen(request.method, request.path, api, 400))
        return web.json_response({"error": {"code": "InvalidResourceType", "message":
                                  f"no route for {request.method} {request.path}"}}, status=400)

    async def _checked(self, request: web.Request, args: dict[str, str], want_api: str,
                       handler: Handler) -> web.Response:
        if want_api:
            api = request.query.get("api-version", "")
            if api != want_api:
                raise ArmError(400, "InvalidApiVersionParameter",
                               f"api-version {api!r}; this route speaks {want_api}")
            auth = request.headers.get("Authorization", "")
            if not auth.startswith("Bearer ") or auth[7:] not in self.state.tokens:
                raise ArmError(401, "AuthenticationFailed", "missing or unknown bearer token")
            if args.get("sub") != self.state.subscription:
                raise ArmError(404, "SubscriptionNotFound", f"{args.get('sub')} not found")
            if "rg" in args and args["rg"].lower() != self.state.resource_group.lower():
                raise ArmError(404, "ResourceGroupNotFound",
                               f"Resource group '{args['rg']}' could not be found.")
            if self.state.faults.throttle_next > 0:
                self.state.faults.throttle_next -= 1
                return web.json_response(
                    {"error": {"code": "TooManyRequests", "message": "throttled"}}, status=429,
                    headers={"Retry-After": self.state.faults.retry_after})
        return await handler(request, args)

    # ------------------------------------------------------------------ auth

    async def _openid(self, request: web.Request, args: dict[str, str]) -> web.Response:
        base = f"{self.url}/{args['tenant']}"
        return web.json_response({
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "issuer": f"{base}/v2.0",
            "token_endpoint_auth_methods_supported": ["client_secret_post"],
            "response_types_supported": ["code", "id_token", "token"],
        })

    async def _token(self, request: web.Request, args: dict[str, str]) -> web.Response:
        form = await request.post()
        s = self.state
        if (args["tenant"] != s.tenant or form.get("client_id") != s.client_id
                or form.get("client_secret") != s.client_secret
                or form.get("grant_type") != "client_credentials"):
            return web.json_response({"error": "invalid_client", "error_description":
                                      "AADSTS7000215: Invalid client secret provided."},
                                     status=401)
        if form.get("scope") != f"{self.url}/.default":
            return web.json_response({"error": "invalid_scope", "error_description":
                                      f"scope {form.get('scope')}"}, status=400)
        self.token_requests += 1
        token = "tok-" + uuid.uuid4().hex
        s.tokens.add(token)
        return web.json_response({"token_type": "Bearer", "expires_in": 3600,
                                  "ext_expires_in": 3600, "access_token": token})

    # ------------------------------------------------------------------- VMs

    def _async(self, status: int, body: Any, op_id: str, loc: str) -> web.Response:
        op = (f"{self.url}/subscriptions/{self.state.subscription}/providers/"
              f"Microsoft.Compute/locations/{loc}/operations/{op_id}?api-version={COMPUTE_API}")
        headers = {"Azure-AsyncOperation": op}
        if self.state.faults.poll_after_ms:
            headers["retry-after-ms"] = str(self.state.faults.poll_after_ms)
        if body is None:
            headers["Location"] = op
            return web.Response(status=status, headers=headers)
        return web.json_response(body, status=status, headers=headers)

    async def _put_vm(self, request: web.Request, args: dict[str, str]) -> web.Response:
        body = json.loads(await request.read())
        existed = args["name"].lower() in self.state.vms
        vm, op = self.state.put_vm(args["name"], body)
        return self._async(200 if existed else 201, vm, op.id, self.state.region)

    def _vm(self, name: str) -> dict[str, Any]:
        vm = self.state.vms.get(name.lower())
        if vm is None:
            raise ArmError(404, "ResourceNotFound", f"The Resource 'Microsoft.Compute/"
                           f"virtualMachines/{name}' under resource group "
                           f"'{self.state.resource_group}' was not found.")
        return vm

    async def _get_vm(self, request: web.Request, args: dict[str, str]) -> web.Response:
        return web.json_response(self._vm(args["name"]))

    async def _del_vm(self, request: web.Request, args: dict[str, str]) -> web.Response:
        op = self.state.delete_vm(args["name"])
        if op is None:
            return web.Response(status=204)
        return self._async(202, None, op.id, self.state.region)

    async def _list_vms(self, request: web.Request, args: dict[str, str]) -> web.Response:
        return self._page(request, list(self.state.vms.values()))

    def _page(self, request: web.Request, items: list[Any]) -> web.Response:
        start = int(request.query.get("$skiptoken", "0"))
        end = start + self.state.page_size
        body: dict[str, Any] = {"value": items[start:end]}
        if end < len(items):
            query = dict(request.query, **{"$skiptoken": str(end)})
            body["nextLink"] = str(request.url.with_query(query))
        return web.json_response(body)

    async def _operation(self, request: web.Request, args: dict[str, str]) -> web.Response:
        op = self.state.operations.get(args["op"])
        if op is None:
            raise ArmError(404, "NotFound", f"operation {args['op']} not found")
        answer = op.poll()
        headers = {}
        if answer["status"] == "InProgress" and self.state.faults.poll_after_ms:
            headers["retry-after-ms"] = str(self.state.faults.poll_after_ms)
        return web.json_response(answer, headers=headers)

    # ------------------------------------------------------ sizes and images

    async def _vm_sizes(self, request: web.Request, args: dict[str, str]) -> web.Response:
        return web.json_response({"value": [
            {"name": s.name, "numberOfCores": s.vcpus, "memoryInMB": s.memory_mib,
             "maxDataDiskCount": MAX_DATA_DISKS, "osDiskSizeInMB": 1047552,
             "resourceDiskSizeInMB": 0}
            for s in SIZES]})

    async def _skus(self, request: web.Request, args: dict[str, str]) -> web.Response:
        region = self.state.region
        wanted = f"location eq '{region}'"
        if request.query.get("$filter", wanted) != wanted:
            return web.json_response({"value": []})
        skus = []
        for s in SIZES:
            caps = [{"name": "vCPUs", "value": str(s.vcpus)},
                    {"name": "MemoryGB", "value": str(s.memory_mib / 1024)},
                    {"name": "GPUs", "value": str(s.gpus)}]
            if s.confidential:
                caps.append({"name": "ConfidentialComputingType", "value": s.confidential})
            skus.append({"resourceType": "virtualMachines", "name": s.name, "tier": "Standard",
                         "size": s.name.removeprefix("Standard_"), "locations": [region],
                         "capabilities": caps, "restrictions": []})
        return web.json_response({"value": skus})

    async def _image(self, request: web.Request, args: dict[str, str]) -> web.Response:
        if request.path.lower() not in self.state.images:
            raise ArmError(404, "ResourceNotFound", f"image {request.path} not found")
        return web.json_response({"id": request.path, "name": request.path.rsplit("/", 1)[1],
                                  "location": self.state.region, "properties": {}})

    async def _community_image(self, request: web.Request, args: dict[str, str]
                               ) -> web.Response:
        image_id = f"/CommunityGalleries/{args['g']}/Images/{args['i']}/Versions/{args['v']}"
        if image_id.lower() not in self.state.images:
            raise ArmError(404, "NotFound", f"community gallery image {image_id} not found")
        return web.json_response({"name": args["v"], "location": args["loc"],
                                  "identifier": {"uniqueId": image_id}, "properties": {}})

    # ------------------------------------------------------ disks, network

    def _table_get(self, table: dict[str, Any], kind: str, name: str) -> dict[str, Any]:
        item = table.get(name.lower())
        if item is None:
            raise ArmError(404, "ResourceNotFound", f"The Resource '{kind}/{name}' under "
                           f"resource group '{self.state.resource_group}' was not found.")
        return {k: v for k, v in item.items() if k != "deleteOption"}

    async def _get_disk(self, request: web.Request, args: dict[str, str]) -> web.Response:
        return web.json_response(
            self._table_get(self.state.disks, "Microsoft.Compute/disks", args["name"]))

    async def _del_disk(self, request: web.Request, args: dict[str, str]) -> web.Response:
        return self._delete_free(self.state.disks, args["name"], "managedBy")

    def _delete_free(self, table: dict[str, Any], name: str, owner: str) -> web.Response:
        item = table.get(name.lower())
        if item is None:
            return web.Response(status=204)
        held = item.get(owner) or item.get("properties", {}).get(owner)
        if held:
            raise ArmError(400, "OperationNotAllowed", f"{name} is attached to {held}")
        table.pop(name.lower())
        return web.Response(status=200)

    async def _get_nic(self, request: web.Request, args: dict[str, str]) -> web.Response:
        return web.json_response(self._table_get(
            self.state.nics, "Microsoft.Network/networkInterfaces", args["name"]))

    async def _del_nic(self, request: web.Request, args: dict[str, str]) -> web.Response:
        return self._delete_free(self.state.nics, args["name"], "virtualMachine")

    async def _list_nics(self, request: web.Request, args: dict[str, str]) -> web.Response:
        return self._page(request, [
            {k: v for k, v in nic.items() if k != "deleteOption"}
            for nic in self.state.nics.values()])

    async def _get_pip(self, request: web.Request, args: dict[str, str]) -> web.Response:
        return web.json_response(self._table_get(
            self.state.public_ips, "Microsoft.Network/publicIPAddresses", args["name"]))

    def _exists(self, table: str) -> Handler:
        async def handler(request: web.Request, args: dict[str, str]) -> web.Response:
            if request.path.lower() not in getattr(self.state, table):
                raise ArmError(404, "NotFound", f"{request.path} not found")
            return web.json_response({"id": request.path,
                                      "name": request.path.rsplit("/", 1)[1]})
        return handler
