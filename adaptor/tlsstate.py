"""Generated TLS material that must survive a restart: ``<state-dir>/tls/``.

Pod VMs trust the adaptor's client certificate and carry server certificates issued by
its CA. A restarted (or rolling-updated) adaptor must present the same client certificate
and verify against the same CA, so what the adaptor generates is kept here, mode 0600:
``ca.crt``/``ca.key`` (automatic mode) and ``client.crt``/``client.key`` (when no
``CERT_FILE`` is given). Two adaptors starting together serialise on ``tls.lock``.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from adaptor.errors import AdaptorError
from adaptor.store import write_private

log = logging.getLogger(__name__)

TLS_DIR = "tls"


@dataclass(frozen=True, slots=True)
class StoredPair:
    cert_pem: str
    key_pem: str


class TLSStateError(AdaptorError):
    """The stored material exists but cannot be used; the message says which file."""


def load_or_create(
    state_dir: str, name: str, create: Callable[[], StoredPair],
    check: Callable[[StoredPair], None] | None = None,
) -> StoredPair:
    """The pair stored as ``<name>.crt``/``<name>.key``, created (and stored) when absent."""
    directory = os.path.join(state_dir, TLS_DIR)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    cert_path = os.path.join(directory, f"{name}.crt")
    key_path = os.path.join(directory, f"{name}.key")
    lock_fd = os.open(os.path.join(directory, "tls.lock"),
                      os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        try:
            with open(cert_path) as cert_file, open(key_path) as key_file:
                pair = StoredPair(cert_file.read(), key_file.read())
        except FileNotFoundError:
            pair = create()
            write_private(key_path, pair.key_pem)
            write_private(cert_path, pair.cert_pem)
            log.info("generated %s certificate, kept in %s", name, directory)
            return pair
        except OSError as exc:
            raise TLSStateError(f"cannot read {name} certificate in {directory}: {exc}") from None
        if check is not None:
            try:
                check(pair)
            except ValueError as exc:
                raise TLSStateError(
                    f"stored {name} certificate in {directory} is unusable: {exc}"
                ) from None
        log.info("loaded %s certificate from %s", name, directory)
        return pair
    finally:
        os.close(lock_fd)
