"""Initdata in the pod VM: extract the guest components' files and record the digest."""

from __future__ import annotations

import logging

from forwarder.userdata.config import FILE_MODE
from forwarder.userdata.errors import ProvisionError, UnsafePathError
from forwarder.userdata.safefs import SafeDir
from protocols import initdata, userdata

log = logging.getLogger(__name__)

INITDATA_NAME = "initdata"
DIGEST_NAME = "initdata.digest"
#: ``[data]`` keys extracted, each to the file of the same name in the peerpod dir.
EXTRACTED_KEYS: frozenset[str] = frozenset(
    path.rsplit("/", 1)[1] for path in userdata.INITDATA_FILES_ALLOWED
)


def process_initdata(root: SafeDir) -> tuple[initdata.InitData, str]:
    """Decode ``<root>/initdata`` (the dummy when absent), write its files and its digest.

    Returns the parsed initdata and its lowercase hex digest.
    """
    try:
        encoded = root.read(INITDATA_NAME, userdata.MAX_USER_DATA_BYTES)
    except FileNotFoundError:
        log.info("%s/%s not found; writing the dummy initdata", root.path, INITDATA_NAME)
        encoded = initdata.encode(initdata.DUMMY_TOML).encode("ascii")
        _write(root, INITDATA_NAME, encoded)
    except (OSError, UnsafePathError) as exc:
        raise ProvisionError(f"cannot read {root.path}/{INITDATA_NAME}: {exc}") from None
    try:
        init = initdata.parse(initdata.decode(encoded))
    except initdata.InitDataError as exc:
        raise ProvisionError(f"{root.path}/{INITDATA_NAME}: {exc}") from None
    for key, value in init.data.items():
        # Exact names only: unlike upstream's filepath.Join, "../peerpod/aa.toml" is not aa.toml.
        if key in EXTRACTED_KEYS:
            _write(root, key, value.encode("utf-8"))
        else:
            log.info("initdata key %r is not extracted (allowed: %s)", key[:80],
                     ", ".join(sorted(EXTRACTED_KEYS)))
    digest = initdata.digest(init)
    _write(root, DIGEST_NAME, digest.encode("ascii"))
    log.info("initdata version=%s algorithm=%s digest=%s", init.version, init.algorithm, digest)
    return init, digest


def _write(root: SafeDir, name: str, data: bytes) -> None:
    try:
        root.write(name, data, FILE_MODE)
    except (OSError, UnsafePathError) as exc:
        raise ProvisionError(f"cannot write {root.path}/{name}: {exc}") from None
    log.info("wrote %s/%s", root.path, name)
