"""HTTP plumbing shared by the KBS clients: sessions, bounded reads, error bodies."""

from __future__ import annotations

import json
import ssl
from typing import Any

import aiohttp

from guest.errors import GuestConfigError, ResponseError

KBS_PREFIX = "kbs/v0"
# A resource reply larger than this is refused (Trustee itself accepts 2 MiB request bodies).
MAX_RESPONSE = 8 * 1024 * 1024
TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=10)


def ssl_context(cert: str | None) -> ssl.SSLContext | None:
    """System roots plus the KBS certificate from the config (PEM), if any."""
    if not cert:
        return None
    context = ssl.create_default_context()
    try:
        context.load_verify_locations(cadata=cert)
    except ssl.SSLError as exc:
        raise GuestConfigError(f"KBS certificate is not a valid PEM certificate: {exc}") from exc
    return context


def new_session(cert: str | None) -> aiohttp.ClientSession:
    """A client session whose cookie jar keeps ``kbs-session-id`` also for IP-address hosts."""
    connector = aiohttp.TCPConnector(ssl=ssl_context(cert) or True)
    return aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.CookieJar(unsafe=True), timeout=TIMEOUT
    )


async def read_limited(response: aiohttp.ClientResponse, limit: int = MAX_RESPONSE) -> bytes:
    length = response.content_length
    if length is not None and length > limit:
        raise ResponseError(f"KBS response of {length} bytes exceeds the {limit} byte limit")
    body = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > limit:
            raise ResponseError(f"KBS response exceeds the {limit} byte limit")
    return bytes(body)


def parse_json(body: bytes, what: str) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ResponseError(f"{what} is not JSON") from exc


def error_info(body: bytes) -> str:
    """kbs-types ``ErrorInformation`` as text (it carries no secret), else a short excerpt."""
    try:
        info = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return repr(body[:200])
    if isinstance(info, dict):
        kind, detail = info.get("type"), info.get("detail")
        return f"ErrorInformation {{ error_type: {kind!r}, detail: {detail!r} }}"
    return repr(body[:200])
