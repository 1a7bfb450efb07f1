"""Initdata in the pod VM: the guest components' files and the digest, staged for commit."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from forwarder.userdata.errors import ProvisionError, UnsafePathError
from forwarder.userdata.safefs import SafeDir
from protocols import initdata, userdata

log = logging.getLogger(__name__)

INITDATA_NAME = "initdata"
DIGEST_NAME = "initdata.digest"
#: ``[data]`` keys extracted, each to the file of the same name in the peerpod dir. These
#: names come only from initdata: ``write_files`` entries for them are refused.
EXTRACTED_KEYS: frozenset[str] = frozenset(
    path.rsplit("/", 1)[1] for path in userdata.INITDATA_FILES_ALLOWED
)


@dataclass(frozen=True, slots=True)
class InitdataFiles:
    """What initdata processing writes: ``files`` maps names in the peerpod dir to bytes."""

    files: dict[str, bytes]
    digest: str
    init: initdata.InitData


def remove_stale(root: SafeDir) -> None:
    """Remove copies of the initdata-only files left by an earlier run or planted by the host,
    so no guest component ever reads configuration that the digest does not cover."""
    for name in sorted(EXTRACTED_KEYS | {DIGEST_NAME}):
        try:
            removed = root.remove(name)
        except (OSError, UnsafePathError) as exc:
            raise ProvisionError(f"cannot remove stale {root.path}/{name}: {exc}") from None
        if removed:
            log.info("removed stale %s/%s before provisioning", root.path, name)


def initdata_files(root: SafeDir, from_user_data: bytes | None) -> InitdataFiles:
    """Decode the initdata (from user-data, else ``<root>/initdata``, else the dummy) and
    return the files to write. Nothing is written here; any error is a ProvisionError."""
    files: dict[str, bytes] = {}
    if from_user_data is not None:
        encoded = from_user_data
    else:
        try:
            encoded = root.read(INITDATA_NAME, userdata.MAX_USER_DATA_BYTES)
        except FileNotFoundError:
            log.info("%s/%s not found; writing the dummy initdata", root.path, INITDATA_NAME)
            encoded = initdata.encode(initdata.DUMMY_TOML).encode("ascii")
            files[INITDATA_NAME] = encoded
        except (OSError, UnsafePathError) as exc:
            raise ProvisionError(f"cannot read {root.path}/{INITDATA_NAME}: {exc}") from None
    try:
        init = initdata.parse(initdata.decode(encoded))
    except initdata.InitDataError as exc:
        raise ProvisionError(f"{root.path}/{INITDATA_NAME}: {exc}") from None
    for key, value in init.data.items():
        # Exact names only: unlike upstream's filepath.Join, "../peerpod/aa.toml" is not aa.toml.
        if key in EXTRACTED_KEYS:
            files[key] = value.encode("utf-8")
        else:
            log.info("initdata key %r is not extracted (allowed: %s)", key[:80],
                     ", ".join(sorted(EXTRACTED_KEYS)))
    digest = initdata.digest(init)
    files[DIGEST_NAME] = digest.encode("ascii")
    log.info("initdata version=%s algorithm=%s digest=%s", init.version, init.algorithm, digest)
    return InitdataFiles(files=files, digest=digest, init=init)
