"""The data hub: resources from the KBC, credentials fetched at start-up."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from guest.addr import unix_path
from guest.cdh.config import CC_KBC, CdhConfig, Credential
from guest.cdh.kbc import OFFLINE_EXTRA_ENV, OFFLINE_FILES, AaTokenSource, CcKbc, Kbc, OfflineFsKbc
from guest.errors import GuestConfigError, GuestError
from guest.kbs.resource_uri import ResourceUri

log = logging.getLogger(__name__)

CDH_BASE_DIR = Path("/run/confidential-containers/cdh")
KBS_RESOURCE_STORAGE_DIR = CDH_BASE_DIR / "kbs"


def make_kbc(config: CdhConfig, env: dict[str, str]) -> Kbc:
    if config.kbc.name == CC_KBC:
        if not config.kbc.url:
            raise GuestConfigError("cdh.toml: [kbc] url is required for cc_kbc")
        tokens = AaTokenSource(unix_path(config.aa_socket))
        return CcKbc(config.kbc.url, config.kbc.kbs_cert, tokens)
    extra = env.get(OFFLINE_EXTRA_ENV)
    paths = [*OFFLINE_FILES, *(Path(p) for p in extra.split(",") if p)] if extra else OFFLINE_FILES
    return OfflineFsKbc.load(paths)


def credential_path_valid(path: str, base: Path = KBS_RESOURCE_STORAGE_DIR) -> bool:
    """Upstream's rule: under the storage dir, and no ``.`` or ``..`` component."""
    return path.startswith(str(base)) and not any(p in (".", "..") for p in path.split("/"))


class Hub:
    def __init__(self, config: CdhConfig, kbc: Kbc) -> None:
        self.config = config
        self.kbc = kbc

    async def get_resource(self, uri: str) -> bytes:
        resource = ResourceUri.parse(uri)
        data = await self.kbc.get_resource(resource)
        log.info("resource=%s: fetched %d bytes", resource, len(data))
        return data

    async def init_credentials(self, base: Path = KBS_RESOURCE_STORAGE_DIR) -> None:
        """Fetch every ``[[credentials]]`` entry into its file (mode 0600)."""
        for credential in self.config.credentials:
            if not credential_path_valid(credential.path, base):
                raise GuestConfigError(
                    f"init Hub failed: illegal path to put credential : {credential.path}"
                )
        for credential in self.config.credentials:
            await self._fetch_credential(credential)

    async def _fetch_credential(self, credential: Credential) -> None:
        try:
            content = await self.get_resource(credential.resource_uri)
        except GuestError as exc:
            raise GuestError(f"init Hub failed: kbs client get resource failed: {exc}") from exc
        _write_private(Path(credential.path), content)
        log.info("credential %s written to %s", credential.resource_uri, credential.path)

    async def aclose(self) -> None:
        await self.kbc.aclose()


def _write_private(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(content)
    os.replace(tmp, path)
