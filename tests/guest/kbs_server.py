"""A loopback KBS speaking Trustee's protocol (KBS 0.4.0, PROTOCOLS.md §4).

What it mirrors from Trustee ``78962cd4``: the /auth version check (``=0.4.0``), the challenge
(44-char base64 nonce, ``extra-params: ""``), the ``kbs-session-id`` cookie (32 hex, expiry
fixed at /auth), the /attest checks (cookie, session, expiry, nonce, init-data format), the
sample verifier's report-data check (sha384 of the JCS runtime data), an ES256 EAR token
with its key in the header ``jwk``, token verification on resource GETs (session cookie
first, then ``Authorization: Bearer``), the resource policy, the JWE, and the
``ErrorInformation`` bodies with 404 only for bad paths and unknown plugins, 401 otherwise.

The resource policy is a Python predicate over (claims, policy data) instead of Rego:
``DEFAULT_POLICY`` denies sample evidence as Trustee's default policy does, ``ALLOW_ALL``
allows the ``resource`` plugin as the allow-all Rego of §4.5 does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import rfc8785
from aiohttp import web
from jwcrypto import jwk, jwt
from jwcrypto.common import JWException

from tests.guest import trustee_jwe

ERROR_PREFIX = "https://github.com/confidential-containers/kbs/errors"
COOKIE = "kbs-session-id"
Policy = Callable[[dict[str, Any], dict[str, Any]], bool]


def DEFAULT_POLICY(claims: dict[str, Any], data: dict[str, Any]) -> bool:
    evidence = claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"]
    return data["plugin"] == "resource" and "sample" not in evidence


def ALLOW_ALL(claims: dict[str, Any], data: dict[str, Any]) -> bool:
    return bool(data["plugin"] == "resource")


class KbsFailure(Exception):
    def __init__(self, variant: str, detail: str) -> None:
        super().__init__(detail)
        self.variant = variant
        self.detail = detail

    def response(self) -> web.Response:
        status = 404 if self.variant in ("InvalidRequestPath", "PluginNotFound") else 401
        body = {"type": f"{ERROR_PREFIX}/{self.variant}", "detail": self.detail}
        # actix sets no content type on these bodies
        return web.Response(status=status, body=json.dumps(body).encode())


def attest_failed() -> KbsFailure:
    return KbsFailure("AttestationError", "Attestation error: RCAR handshake Attest failed")


def auth_failed(reason: str) -> KbsFailure:
    return KbsFailure(
        "AttestationError", f"Attestation error: RCAR handshake Auth failed: {reason}"
    )


@dataclass
class Session:
    id: str
    tee: str
    nonce: str
    expires: float
    token: str | None = None


@dataclass
class KbsState:
    session_timeout: float = 300.0
    token_duration: float = 300.0
    policy: Policy = DEFAULT_POLICY
    resources: dict[str, bytes] = field(default_factory=dict)
    sessions: dict[str, Session] = field(default_factory=dict)
    # test knobs and counters
    revoked: set[str] = field(default_factory=set)  # tokens refused from now on
    tamper_tag: bool = False
    pad_response: int = 0  # bytes of whitespace appended to resource replies
    auth_count: int = 0
    attest_count: int = 0
    resource_count: int = 0


class LoopbackKbs:
    def __init__(self, state: KbsState | None = None) -> None:
        self.state = state or KbsState()
        self.signer = jwk.JWK.generate(kty="EC", crv="P-256")
        self.app = web.Application(client_max_size=2 * 1024 * 1024)
        self.app.router.add_route("*", "/kbs/v0/{path:.*}", self.api)
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> str:
        self._runner = web.AppRunner(self.app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        port = self._runner.addresses[0][1]
        scheme = "https" if ssl_context else "http"
        self.url = f"{scheme}://127.0.0.1:{port}"
        return self.url

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # routing ----------------------------------------------------------------------------
    async def api(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        parts = path.split("/")
        try:
            body = await request.read()
            plugin = parts[0]
            if plugin == "auth" and request.method == "POST":
                return self.auth(body)
            if plugin == "attest" and request.method == "POST":
                return self.attest(body, request)
            if plugin != "resource":
                raise KbsFailure("PluginNotFound", f"Plugin {plugin} not found")
            if request.method == "POST":  # admin, InsecureAllowAll
                self.state.resources["/".join(parts[1:])] = body
                return web.Response()
            return self.resource(parts[1:], dict(request.query), request)
        except KbsFailure as failure:
            return failure.response()

    # RCAR -------------------------------------------------------------------------------
    def auth(self, body: bytes) -> web.Response:
        self.state.auth_count += 1
        try:
            req = json.loads(body)
            version, tee = req["version"], req["tee"]
        except (ValueError, KeyError, TypeError) as exc:
            raise auth_failed("deserialize Request") from exc
        if version != "0.4.0":
            raise auth_failed(
                "KBS Client Protocol Version Mismatch: "
                f"expect =0.4.0 while the request is {version}"
            )
        session = Session(
            uuid.uuid4().hex,
            tee,
            base64.b64encode(os.urandom(32)).decode(),
            time.time() + self.state.session_timeout,
        )
        self.state.sessions[session.id] = session
        response = web.json_response({"nonce": session.nonce, "extra-params": ""})
        response.headers["Set-Cookie"] = (
            f"{COOKIE}={session.id}; Expires={_http_date(session.expires)}"
        )
        return response

    def attest(self, body: bytes, request: web.Request) -> web.Response:
        self.state.attest_count += 1
        session_id = request.cookies.get(COOKIE)
        session = self.state.sessions.get(session_id or "")
        if session is None:
            raise attest_failed()
        if time.time() >= session.expires:
            del self.state.sessions[session.id]
            raise attest_failed()
        try:
            attestation = json.loads(body)
            runtime = attestation["runtime-data"]
            evidence = attestation["tee-evidence"]
            primary, additional = evidence["primary_evidence"], evidence["additional_evidence"]
        except (ValueError, KeyError, TypeError) as exc:
            raise attest_failed() from exc
        if session.token is None:
            if runtime.get("nonce") != session.nonce:
                raise attest_failed()
            init_data = attestation.get("init-data")
            if init_data is not None and init_data.get("format") != "toml":
                raise attest_failed()
            claims = self._verify_sample(session, runtime, primary, additional, init_data)
            session.token = self._sign(claims)
        response = web.json_response({"token": session.token})
        response.headers["Set-Cookie"] = (
            f"{COOKIE}={session.id}; Expires={_http_date(session.expires)}"
        )
        return response

    def _verify_sample(
        self,
        session: Session,
        runtime: dict[str, Any],
        primary: Any,
        additional: str,
        init_data: dict[str, Any] | None,
    ) -> dict[str, Any]:
        if session.tee != "sample" or not isinstance(primary, dict):
            raise attest_failed()
        expected = hashlib.sha384(
            rfc8785.dumps(
                {
                    "tee-pubkey": runtime["tee-pubkey"],
                    "nonce": session.nonce,
                    "additional-evidence": additional,
                }
            )
        ).digest()
        try:
            report_data = base64.b64decode(primary["report_data"], validate=True)
        except (KeyError, TypeError, binascii.Error) as exc:
            raise attest_failed() from exc
        if report_data != expected:
            raise attest_failed()
        sample = {
            "svn": primary.get("svn"),
            "report_data": primary["report_data"],
            "launch_digest": "abcde",
            "platform_version": {"major": 1, "minor": 4},
            "debug": False,
        }
        annotated: dict[str, Any] = {
            "sample": sample,
            "report_data": primary["report_data"],
            "runtime_data_claims": {"nonce": session.nonce, "tee-pubkey": runtime["tee-pubkey"]},
        }
        if init_data is not None:
            digest = hashlib.sha384(init_data["body"].encode()).digest()
            annotated["init_data"] = base64.b64encode(digest).decode()
        now = int(time.time())
        return {
            "eat_profile": "tag:github.com,2024:confidential-containers/Trustee",
            "iat": now,
            "exp": now + int(self.state.token_duration),
            "iss": "CoCo-Attestation-Service",
            "ear.verifier-id": {
                "developer": "https://confidentialcontainers.org",
                "build": "attestation-service loopback",
            },
            "submods": {
                "cpu0": {
                    "ear.status": "affirming",
                    "ear.trustworthiness-vector": {},
                    "ear.appraisal-policy-id": "default",
                    "ear.veraison.annotated-evidence": annotated,
                }
            },
        }

    def _sign(self, claims: dict[str, Any]) -> str:
        header = {"alg": "ES256", "typ": "JWT", "jwk": self.signer.export_public(as_dict=True)}
        token = jwt.JWT(header=header, claims=claims)
        token.make_signed_token(self.signer)
        return str(token.serialize())

    # resources --------------------------------------------------------------------------
    def resource(
        self, path: list[str], query: dict[str, str], request: web.Request
    ) -> web.Response:
        self.state.resource_count += 1
        claims = self._verified_claims(request)
        data = {"plugin": "resource", "resource-path": path, "query": query}
        if not self.state.policy(claims, data):
            raise KbsFailure("PolicyDeny", "Access denied by policy")
        if len(path) != 3 or "/".join(path) not in self.state.resources:
            raise KbsFailure("PluginInternalError", "Plugin internal error")
        pointer = claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"]
        tee_pubkey = pointer["runtime_data_claims"]["tee-pubkey"]
        jwe = trustee_jwe.build(tee_pubkey, self.state.resources["/".join(path)])
        if self.state.tamper_tag:
            tag = bytearray(trustee_jwe.unb64url(jwe["tag"]))
            tag[0] ^= 1
            jwe["tag"] = trustee_jwe.b64url(bytes(tag))
        text = json.dumps(jwe) + " " * self.state.pad_response
        return web.Response(text=text, content_type="application/json")

    def _verified_claims(self, request: web.Request) -> dict[str, Any]:
        token = None
        session = self.state.sessions.get(request.cookies.get(COOKIE, ""))
        if session is not None and session.token and time.time() < session.expires:
            token = session.token
        auth = request.headers.get("Authorization", "")
        if token is None and auth.startswith("Bearer "):
            token = auth[len("Bearer ") :]
        if token is None:
            raise KbsFailure("TokenNotFound", "Attestation Token not found")
        try:
            verified = jwt.JWT(jwt=token, key=self.signer, algs=["ES256"])
            claims: dict[str, Any] = json.loads(verified.claims)
        except (JWException, ValueError) as exc:
            raise KbsFailure("TokenVerifierError", "Token Verifier error") from exc
        if token in self.state.revoked:
            raise KbsFailure("TokenVerifierError", "Token Verifier error")
        return claims


def _http_date(when: float) -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(when))
