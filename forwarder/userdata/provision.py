"""``process-user-data provision-files``: user-data and initdata to files under the peerpod dir.

1. Detect the source (config drive file first, then the clouds from DMI) and fetch the
   user-data, retrying fetch and parse errors every ``retry_delay`` seconds until
   ``fetch_timeout``; then fail with the last error.
2. Keep the ``write_files`` entries whose path is on the allow-list; log and skip the rest.
3. Process initdata (the dummy when none arrived): its files and its digest.
4. Commit: every file is staged under a temporary name first and all are renamed into
   place only when all were staged, so a failure leaves no half-provisioned directory.
5. Extend TPM PCR 8 with the digest when a TPM is present.

Stale copies of the initdata-only files are removed first. An allow-listed file that cannot
be written safely (a symlink or a non-regular file at its place) fails the whole step.
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
from forwarder.userdata.initdata import INITDATA_NAME, initdata_files, remove_stale
from forwarder.userdata.safefs import SafeDir, Staged
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


def select_allowed(
    files: Sequence[userdata.WriteFile],
) -> tuple[dict[str, bytes], list[str]]:
    """Split the entries into allow-listed ones (relative name -> bytes) and refused paths.

    An entry for a file that comes only from initdata (``aa.toml``, ``cdh.toml``,
    ``policy.rego``) is refused like any other path off the allow-list, with its own log line:
    taking it would let the host pick the KBS behind the measured initdata's back.
    """
    allowed: dict[str, bytes] = {}
    refused: list[str] = []
    prefix = userdata.PEERPOD_DIR + "/"
    for item in files:
        shown = item.path[:200]
        if item.path in userdata.INITDATA_FILES_ALLOWED:
            log.warning("user-data file %r refused: it may come only from initdata, whose "
                        "digest is measured; skipped", shown)
            refused.append(item.path)
        elif item.path not in userdata.WRITE_FILES_ALLOWED:
            log.warning("user-data file %r is not allowed; skipped", shown)
            refused.append(item.path)
        else:
            allowed[item.path.removeprefix(prefix)] = item.content.encode("utf-8")
    return allowed, refused


def commit_all(root: SafeDir, files: dict[str, bytes]) -> list[str]:
    """Stage every file, then rename them all into place; on any failure nothing is renamed
    and every temporary file is removed. Returns the names written, in order."""
    staged: list[Staged] = []
    try:
        for name, data in files.items():
            try:
                staged.append(root.stage(name, data, FILE_MODE))
            except (OSError, UnsafePathError) as exc:
                raise ProvisionError(f"cannot write {root.path}/{name}: {exc}") from None
        for item in staged:
            try:
                item.commit()
            except OSError as exc:
                raise ProvisionError(f"cannot write {root.path}/{item.relpath}: {exc}") from None
            log.info("wrote %s/%s", root.path, item.relpath)
    finally:
        for item in staged:
            item.discard()
    return list(files)


async def provision_files(config: ProvisionConfig) -> ProvisionResult:
    """Run the whole provisioning step once. Raises :class:`ProvisionError` on failure.

    Everything is fetched and validated before anything is written: a failure leaves the
    peerpod dir without any of this run's files (and without stale initdata-only files).
    """
    try:
        root = SafeDir.open(config.peerpod_dir)
    except (OSError, UnsafePathError) as exc:
        raise ProvisionError(f"cannot open {config.peerpod_dir}: {exc}") from None
    with root:
        remove_stale(root)
        allowed: dict[str, bytes] = {}
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
                allowed, refused = select_allowed(files)
        outputs = initdata_files(root, allowed.get(INITDATA_NAME))
        written = commit_all(root, {**allowed, **outputs.files})
        extended = await extend_pcr8(
            root, outputs.digest, enabled=config.extend_pcr8, device=config.tpm_device,
            command=config.pcrextend_command,
        )
    prefix = userdata.PEERPOD_DIR + "/"
    return ProvisionResult(
        source=None if source is None else source.name,
        written=tuple(prefix + name for name in written if name in allowed),
        refused=tuple(refused),
        digest=outputs.digest,
        pcr8_extended=extended,
    )
