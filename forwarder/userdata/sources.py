"""Where a pod VM's user-data comes from: the config drive or a cloud metadata service.

Each source makes one attempt per :meth:`UserDataSource.fetch` call and raises
:class:`FetchError` when it fails; the caller retries. Nothing here logs the user-data or an
IMDS token.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import stat
from pathlib import Path
from typing import Protocol

import aiohttp

from forwarder.userdata.errors import FetchError
from protocols.userdata import MAX_USER_DATA_BYTES

log = logging.getLogger(__name__)

#: Bound on one metadata request, so a hung connection cannot use up every retry.
REQUEST_TIMEOUT = 10.0
#: Upstream's bound on the IMDSv2 token request.
AWS_TOKEN_TIMEOUT = 5.0
AWS_TOKEN_TTL_SECONDS = "60"
#: IMDSv2 tokens are a few dozen bytes; a larger answer is not a token.
AWS_TOKEN_MAX_BYTES = 4096

AWS_TOKEN_PATH = "/latest/api/token"
AWS_USER_DATA_PATH = "/latest/user-data"
AZURE_USER_DATA_PATH = "/metadata/instance/compute/userData?api-version=2021-01-01&format=text"
GCP_USER_DATA_PATH = "/computeMetadata/v1/instance/attributes/user-data"
ALIBABA_USER_DATA_PATH = "/latest/user-data"


class UserDataSource(Protocol):
    name: str

    async def fetch(self) -> bytes:
        """One attempt to get the raw (decoded) user-data."""
        ...


def _decode_base64(body: bytes, url: str) -> bytes:
    """Go's ``base64.StdEncoding.DecodeString``, which skips ``\\r`` and ``\\n``."""
    compact = body.replace(b"\r", b"").replace(b"\n", b"")
    try:
        return base64.b64decode(compact, validate=True)
    except binascii.Error as exc:
        raise FetchError(f"{url}: user-data is not valid base64 ({exc})") from None


async def _read_limited(
    response: aiohttp.ClientResponse, url: str, limit: int = MAX_USER_DATA_BYTES,
    what: str = "user-data",
) -> bytes:
    """The body, refused as soon as it passes ``limit`` bytes (never read whole first)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(65536):
        size += len(chunk)
        if size > limit:
            raise FetchError(f"{url}: {what} is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def http_get(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    *,
    timeout: float = REQUEST_TIMEOUT,
) -> bytes:
    """GET ``url``; anything but ``200`` is a :class:`FetchError`."""
    try:
        async with session.get(
            url,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
        ) as response:
            if response.status != 200:
                raise FetchError(f"{url} answered {response.status} {response.reason or ''}")
            return await _read_limited(response, url)
    except aiohttp.ClientError as exc:
        raise FetchError(f"{url}: {type(exc).__name__}: {exc}") from None
    except TimeoutError:
        raise FetchError(f"{url}: no answer within {timeout:g}s") from None


def _url(base: str, path: str) -> str:
    return base.rstrip("/") + path


class FileSource:
    """``<cidata>/user-data`` on the config drive (libvirt cidata ISO, BYOM over SFTP)."""

    name = "file"

    def __init__(self, path: Path) -> None:
        self.path = path

    async def fetch(self) -> bytes:
        log.info("source=file: reading user-data from %s", self.path)
        return await asyncio.to_thread(read_regular_file, self.path, MAX_USER_DATA_BYTES)


def read_regular_file(path: Path, limit: int) -> bytes:
    """At most ``limit`` bytes of a regular file. A FIFO, a device or a directory is refused
    without blocking (``O_NONBLOCK``): it could otherwise hang the read past every timeout."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise FetchError(f"{path}: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise FetchError(f"{path}: user-data is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as stream:
            data = stream.read(limit + 1)
    except OSError as exc:
        raise FetchError(f"{path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise FetchError(f"{path}: user-data is larger than {limit} bytes")
    return data


class AzureSource:
    """Azure IMDS ``userData``: header ``Metadata: true``, base64 body."""

    name = "azure"

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self._session = session
        self.url = _url(base_url, AZURE_USER_DATA_PATH)

    async def fetch(self) -> bytes:
        log.info("source=azure: fetching user-data from %s", self.url)
        body = await http_get(self._session, self.url, {"Metadata": "true"})
        return _decode_base64(body, self.url)


class AwsSource:
    """AWS IMDS: IMDSv2 token when the service gives one, else IMDSv1; raw body."""

    name = "aws"

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self._session = session
        self.token_url = _url(base_url, AWS_TOKEN_PATH)
        self.url = _url(base_url, AWS_USER_DATA_PATH)

    async def _token(self) -> str | None:
        try:
            async with self._session.put(
                self.token_url,
                headers={"X-aws-ec2-metadata-token-ttl-seconds": AWS_TOKEN_TTL_SECONDS},
                timeout=aiohttp.ClientTimeout(total=AWS_TOKEN_TIMEOUT),
                allow_redirects=False,
            ) as response:
                if response.status != 200:
                    reason = f"{self.token_url} answered {response.status}"
                else:
                    body = await _read_limited(
                        response, self.token_url, AWS_TOKEN_MAX_BYTES, "IMDSv2 token"
                    )
                    return body.decode("ascii", errors="replace")
        except FetchError as exc:
            reason = str(exc)
        except aiohttp.ClientError as exc:
            reason = f"{self.token_url}: {type(exc).__name__}"
        except TimeoutError:
            reason = f"{self.token_url}: no answer within {AWS_TOKEN_TIMEOUT:g}s"
        log.info("source=aws: IMDSv2 token fetch failed (%s); falling back to IMDSv1", reason)
        return None

    async def fetch(self) -> bytes:
        log.info("source=aws: fetching user-data from %s", self.url)
        token = await self._token()
        headers = {"X-aws-ec2-metadata-token": token} if token is not None else {}
        return await http_get(self._session, self.url, headers)


class GcpSource:
    """GCP metadata server: header ``Metadata-Flavor: Google``, base64 body."""

    name = "gcp"

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self._session = session
        self.url = _url(base_url, GCP_USER_DATA_PATH)

    async def fetch(self) -> bytes:
        log.info("source=gcp: fetching user-data from %s", self.url)
        body = await http_get(self._session, self.url, {"Metadata-Flavor": "Google"})
        return _decode_base64(body, self.url)


class AlibabaSource:
    """Alibaba Cloud metadata service: raw body, no headers."""

    name = "alibaba"

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self._session = session
        self.url = _url(base_url, ALIBABA_USER_DATA_PATH)

    async def fetch(self) -> bytes:
        log.info("source=alibaba: fetching user-data from %s", self.url)
        return await http_get(self._session, self.url, {})
