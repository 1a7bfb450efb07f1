"""The worker's own EC2 instance metadata (IMDSv2), used to fill missing settings.

As upstream does, a missing subnet, region, key name or security-group list is read from
the IMDS of the machine the adaptor runs on: ``mac`` ->
``network/interfaces/macs/<mac>/subnet-id`` and ``.../security-group-ids``,
``placement/region`` and ``public-keys`` (``0=<name>``). A session token is requested first
(IMDSv2); when the service refuses tokens the lookup falls back to IMDSv1.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import aiohttp

from providers.base import ProviderError

log = logging.getLogger(__name__)

TOKEN_PATH = "/latest/api/token"
METADATA_PREFIX = "/latest/meta-data/"
TOKEN_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
TOKEN_TTL_SECONDS = 21600


class ImdsError(ProviderError):
    """The IMDS could not be reached or did not have the value."""


@dataclass(frozen=True, slots=True)
class NetworkDefaults:
    """What the settings left empty, as far as the IMDS could tell (``""``/``()`` if not)."""

    region: str = ""
    subnet_id: str = ""
    key_name: str = ""
    security_group_ids: tuple[str, ...] = ()


def parse_public_keys(text: str) -> str:
    """The first key name in a ``public-keys`` listing (``0=my-key``), or ``""``."""
    for line in text.splitlines():
        index, sep, name = line.strip().partition("=")
        if sep and index == "0" and name.strip():
            return name.strip().split()[0]
    return ""


class ImdsClient:
    def __init__(self, base_url: str, session: aiohttp.ClientSession) -> None:
        self._base = base_url.rstrip("/")
        self._session = session
        self._token: str | None = None
        self._token_tried = False
        self._unreachable: ImdsError | None = None

    async def _fetch_token(self) -> None:
        self._token_tried = True
        try:
            async with self._session.put(
                self._base + TOKEN_PATH, headers={TOKEN_TTL_HEADER: str(TOKEN_TTL_SECONDS)}
            ) as resp:
                if resp.status == 200:
                    self._token = (await resp.text()).strip()
                    return
                log.info("IMDS token request answered %s; falling back to IMDSv1", resp.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._unreachable = ImdsError(f"IMDS at {self._base} unreachable: {exc!r}")
            raise self._unreachable from exc

    async def get(self, path: str) -> str:
        if self._unreachable is not None:
            raise self._unreachable
        if not self._token_tried:
            await self._fetch_token()
        headers = {TOKEN_HEADER: self._token} if self._token else {}
        url = self._base + METADATA_PREFIX + path.lstrip("/")
        try:
            async with self._session.get(url, headers=headers) as resp:
                if resp.status != 200:
                    raise ImdsError(f"IMDS {path}: HTTP {resp.status}")
                return (await resp.text()).strip()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ImdsError(f"IMDS {path}: {exc!r}") from exc


async def lookup_defaults(
    base_url: str,
    *,
    need_region: bool,
    need_subnet: bool,
    need_key: bool,
    need_security_groups: bool,
    timeout: float = 3.0,
) -> NetworkDefaults:
    """Ask the IMDS for the values that are needed. Failures are logged, not raised."""
    region = subnet = key = ""
    groups: tuple[str, ...] = ()
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(timeout=client_timeout) as session:
        imds = ImdsClient(base_url, session)
        mac = ""
        try:
            if need_subnet or need_security_groups:
                mac = await imds.get("mac")
            if need_subnet and mac:
                subnet = await imds.get(f"network/interfaces/macs/{mac}/subnet-id")
                log.info("%s SubnetId retrieved from IMDS", subnet)
            if need_region:
                region = await imds.get("placement/region")
                log.info("%s Region retrieved from IMDS", region)
            if need_security_groups and mac:
                raw = await imds.get(f"network/interfaces/macs/{mac}/security-group-ids")
                groups = tuple(raw.split())
                log.info("%s SecurityGroupIds retrieved from IMDS", ",".join(groups))
        except ImdsError as exc:
            log.warning("could not fill missing AWS settings from IMDS: %s", exc)
        if need_key:
            try:
                key = parse_public_keys(await imds.get("public-keys"))
            except ImdsError as exc:
                log.info("no key name from IMDS, skipped: %s", exc)
            if key:
                log.info("%s KeyName retrieved from IMDS", key)
    return NetworkDefaults(
        region=region, subnet_id=subnet, key_name=key, security_group_ids=groups
    )
