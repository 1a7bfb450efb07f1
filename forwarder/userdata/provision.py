"""``process-user-data provision-files``: user-data and initdata to files under the peerpod dir.

1. Detect the source (config drive file first, then the clouds from DMI) and fetch the
   user-data, retrying fetch and parse errors every ``retry_delay`` seconds until
   ``fetch_timeout``; then fail with the last error.
2. Write the ``write_files`` entries whose path is on the allow-list; log and skip the rest.
3. Process initdata (the dummy when none arrived) and write its digest.
4. Extend TPM PCR 8 with the digest when a TPM is present.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp

from forwarder.userdata.config import FILE_MODE, ProvisionConfig
from forwarder.userdata.detect import detect_source
from forwarder.userdata.errors import FetchError, ProvisionError, UnsafePathError
from forwarder.userdata.initdata import process_initdata
from forwarder.userdata.safefs import SafeDir
from forwarder.userdata.sources import UserDataSource
from forwarder.userdata.tpm import extend_pcr8
from protocols import userdata

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ProvisionResult:
    source: str | None
    written: tuple[str, ...]
    refused: tuple[str, ...]
    digest: str
    pcr8_extended: bool


async def retrieve(
    source: UserDataSource, *, timeout: float, retry_delay: float
) -> list[userdata.WriteFile]:
    """Fetch and parse until valid, retrying both kinds of failure until ``timeout``."""
    last: Exception | None = None
    attempt = 0
    try:
        async with asyncio.timeout(timeout):
            while True:
                attempt += 1
                try:
                    files = userdata.parse(await source.fetch())
                except (FetchError, userdata.UserDataError) as exc:
                    last = exc
                    log.warning(
                        "source=%s attempt=%d: %s; retrying in %gs",
                        source.name, attempt, exc, retry_delay,
                    )
                else:
                    log.info(
                        "source=%s attempt=%d: user-data has %d file(s)",
                        source.name, attempt, len(files),
                    )
                    return files
                await asyncio.sleep(retry_delay)
    except TimeoutError:
        reason = f": {last}" if last is not None else ""
        raise ProvisionError(
            f"no valid user-data from source {source.name} within {timeout:g}s "
            f"({attempt} attempt(s)){reason}"
        ) from None


def write_allowed(
    root: SafeDir, files: Sequence[userdata.WriteFile]
) -> tuple[list[str], list[str]]:
    """Write the allow-listed entries; return (written, refused) paths as given."""
    written: list[str] = []
    refused: list[str] = []
    prefix = userdata.PEERPOD_DIR + "/"
    for item in files:
        shown = item.path[:200]
        if item.path not in userdata.WRITE_FILES_ALLOWED:
            log.warning("user-data file %r is not allowed; skipped", shown)
            refused.append(item.path)
            continue
        relpath = item.path.removeprefix(prefix)
        try:
            root.write(relpath, item.content.encode("utf-8"), FILE_MODE)
        except UnsafePathError as exc:
            log.warning("user-data file %r refused: %s", shown, exc)
            refused.append(item.path)
            continue
        except OSError as exc:
            raise ProvisionError(f"cannot write {root.path}/{relpath}: {exc}") from None
        log.info("wrote %s/%s from user-data", root.path, relpath)
        written.append(item.path)
    return written, refused


async def provision_files(config: ProvisionConfig) -> ProvisionResult:
    """Run the whole provisioning step once. Raises :class:`ProvisionError` on failure."""
    try:
        root = SafeDir.open(config.peerpod_dir)
    except (OSError, UnsafePathError) as exc:
        raise ProvisionError(f"cannot open {config.peerpod_dir}: {exc}") from None
    with root:
        written: list[str] = []
        refused: list[str] = []
        async with aiohttp.ClientSession() as session:
            source = detect_source(config, session)
            if source is None:
                log.info("no user-data source detected; processing initdata only")
            else:
                log.info("user-data source: %s", source.name)
                files = await retrieve(
                    source, timeout=config.fetch_timeout, retry_delay=config.retry_delay
                )
                written, refused = write_allowed(root, files)
        _, digest = process_initdata(root)
        extended = await extend_pcr8(
            root, digest, device=config.tpm_device, command=config.pcrextend_command
        )
    return ProvisionResult(
        source=None if source is None else source.name,
        written=tuple(written),
        refused=tuple(refused),
        digest=digest,
        pcr8_extended=extended,
    )
