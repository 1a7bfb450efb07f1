"""A real software TPM (``swtpm``) on loopback TCP ports, and what the attesters expect in it.

Provisioning
goes through tpm2-pytss directly, not through the code under test.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

#: tpm2-pytss needs libtss2 at import time: skip (with the reason) where it is absent
tss = pytest.importorskip("tpm2_pytss")

needs_swtpm = pytest.mark.skipif(shutil.which("swtpm") is None, reason="swtpm not installed")


@dataclass(frozen=True, slots=True)
class SoftTpm:
    tcti: str

    @contextmanager
    def esapi(self) -> Iterator[Any]:
        name, _, config = self.tcti.partition(":")
        tcti = tss.TCTILdr(name, config)
        esapi = tss.ESAPI(tcti)
        try:
            yield esapi
        finally:
            esapi.close()
            tcti.close()

    def create_ak(self, persistent: int) -> bytes:
        """A restricted RSA-2048 RSASSA-SHA256 signing key (an AK), made persistent.
        Returns its public key, DER SubjectPublicKeyInfo."""
        template = tss.TPM2B_PUBLIC.parse(
            "rsa2048:rsassa-sha256:null",
            objectAttributes=(
                tss.TPMA_OBJECT.RESTRICTED
                | tss.TPMA_OBJECT.SIGN_ENCRYPT
                | tss.TPMA_OBJECT.FIXEDTPM
                | tss.TPMA_OBJECT.FIXEDPARENT
                | tss.TPMA_OBJECT.SENSITIVEDATAORIGIN
                | tss.TPMA_OBJECT.USERWITHAUTH
            ),
        )
        with self.esapi() as esapi:
            handle, public, _, _, _ = esapi.create_primary(None, template)
            esapi.evict_control(tss.ESYS_TR.OWNER, handle, persistent)
            esapi.flush_context(handle)
        return bytes(public.publicArea.to_der())

    def define_nv(self, index: int, data: bytes) -> None:
        attributes = tss.TPMA_NV.OWNERWRITE | tss.TPMA_NV.OWNERREAD
        public = tss.TPM2B_NV_PUBLIC(
            nvPublic=tss.TPMS_NV_PUBLIC(
                nvIndex=index,
                nameAlg=tss.TPM2_ALG.SHA256,
                attributes=attributes,
                dataSize=len(data),
            )
        )
        with self.esapi() as esapi:
            handle = esapi.nv_define_space(None, public, tss.ESYS_TR.OWNER)
            for offset in range(0, len(data), 1024):
                esapi.nv_write(handle, data[offset : offset + 1024], offset, tss.ESYS_TR.OWNER)

    def pcr(self, index: int) -> bytes:
        with self.esapi() as esapi:
            _, _, digests = esapi.pcr_read(f"sha256:{index}")
        return bytes(digests[0])


def _listener(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen(4)
    except OSError:
        sock.close()
        raise
    return sock


def _listeners() -> tuple[socket.socket, socket.socket]:
    """The command and control sockets: tpm2-tss's swtpm TCTI wants control on port + 1."""
    for _ in range(50):
        server = _listener(0)
        try:
            return server, _listener(server.getsockname()[1] + 1)
        except OSError:
            server.close()
    raise RuntimeError("no two consecutive free loopback ports")


def _start(state: Path) -> tuple[subprocess.Popen[bytes], int]:
    """swtpm on two consecutive free ports: probed, released, then handed to swtpm. Another
    process taking one in between makes swtpm exit, and the next pair is tried."""
    for _ in range(10):
        server, ctrl = _listeners()
        port = server.getsockname()[1]
        server.close()
        ctrl.close()
        proc = subprocess.Popen(
            [
                "swtpm", "socket", "--tpm2",
                "--tpmstate", f"dir={state}",
                "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
                "--ctrl", f"type=tcp,port={port + 1},bindaddr=127.0.0.1",
                "--flags", "not-need-init,startup-clear",
            ],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        if _wait_listening(proc, port + 1):
            return proc, port
    raise RuntimeError("swtpm did not start")


def _wait_listening(proc: subprocess.Popen[bytes], port: int) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            proc_wait(proc, 0.05)
    proc.kill()
    proc.wait()
    return False


def proc_wait(proc: subprocess.Popen[bytes], seconds: float) -> None:
    """Wait for the process to exit, at most ``seconds`` (a bounded poll interval)."""
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        pass


@contextmanager
def running_swtpm(state: Path) -> Iterator[SoftTpm]:
    proc, port = _start(state)
    try:
        yield SoftTpm(f"swtpm:host=127.0.0.1,port={port}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
