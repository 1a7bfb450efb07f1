"""A TPM 2.0 reached through tpm2-tss (``tpm2-pytss``), for the vTPM and TPM attesters.

Blocking: callers run these in a thread. One :class:`Tpm` is one ESAPI context over one
TCTI, opened per operation as upstream does (``tss-esapi`` ``Context::new`` per call).
The TCTI string is tpm2-tss's ``name:config`` (``device:/dev/tpm0``, ``swtpm:port=2321``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from guest.errors import AttesterError

PCR_COUNT = 24
SHA256_SIZE = 32
#: TPM2_PCR_Read returns at most this many digests per call.
_PCRS_PER_READ = 8
#: the largest TPM2_NV_Read / TPM2_NV_Write chunk (MAX_NV_BUFFER_SIZE) every TPM accepts
NV_CHUNK = 1024


@dataclass(frozen=True, slots=True)
class Quote:
    """A TPM2_Quote over the 24 SHA-256 PCRs, and those PCRs as read right after."""

    attest: bytes  # marshalled TPMS_ATTEST (the signed message)
    signature: bytes  # marshalled TPMT_SIGNATURE
    rsa_signature: bytes  # the bare RSASSA signature in it
    pcrs: tuple[bytes, ...]


def expected_extend(old: bytes, digest: bytes) -> bytes:
    """The SHA-256 PCR value after extending ``old`` with ``digest``."""
    return hashlib.sha256(old + digest).digest()


def _pytss() -> Any:
    try:
        import tpm2_pytss
    except ImportError as exc:  # the ``tpm`` extra, or libtss2, is not installed
        raise AttesterError(f"TPM support needs tpm2-pytss and libtss2: {exc}") from exc
    return tpm2_pytss


class Tpm:
    """The few TPM commands the attesters use."""

    def __init__(self, tcti: str) -> None:
        self.tcti = tcti

    @contextmanager
    def _esapi(self) -> Iterator[Any]:
        tss = _pytss()
        name, _, config = self.tcti.partition(":")
        try:
            tcti = tss.TCTILdr(name, config or None)
            esapi = tss.ESAPI(tcti)
        except tss.TSS2_Exception as exc:
            raise AttesterError(f"open TPM {self.tcti}: {exc}") from exc
        try:
            yield esapi
        except tss.TSS2_Exception as exc:
            raise AttesterError(f"TPM {self.tcti}: {exc}") from exc
        finally:
            esapi.close()
            tcti.close()

    def read_pcrs_sha256(self, esapi: Any | None = None) -> tuple[bytes, ...]:
        if esapi is None:
            with self._esapi() as opened:
                return self.read_pcrs_sha256(opened)
        tss = _pytss()
        values: dict[int, bytes] = {}
        while len(values) < PCR_COUNT:
            wanted = [i for i in range(PCR_COUNT) if i not in values]
            selection = tss.TPML_PCR_SELECTION.parse("sha256:" + ",".join(map(str, wanted)))
            _, got, digests = esapi.pcr_read(selection)
            indexes = _selected(got)
            if not indexes:
                raise AttesterError("TPM returned no SHA-256 PCR values")
            for index, digest in zip(indexes, digests, strict=True):
                values[index] = bytes(digest)
        return tuple(values[i] for i in range(PCR_COUNT))

    def extend_pcr(self, pcr: int, digest: bytes) -> None:
        if not 0 <= pcr < PCR_COUNT:
            raise AttesterError(f"Invalid PCR index: {pcr}")
        if len(digest) != SHA256_SIZE:
            raise AttesterError("expected sha256 digest")
        tss = _pytss()
        value = tss.TPMT_HA(hashAlg=tss.TPM2_ALG.SHA256)
        value.digest.sha256 = digest
        with self._esapi() as esapi:
            esapi.pcr_extend(tss.ESYS_TR.PCR0 + pcr, tss.TPML_DIGEST_VALUES([value]))

    def quote(self, ak_handle: int, qualifying_data: bytes, *, rsassa_sha256: bool) -> Quote:
        """Quote all 24 SHA-256 PCRs with the persistent AK. ``rsassa_sha256`` asks for
        that scheme explicitly (the TPM attester); otherwise the key's own scheme (vTPM)."""
        tss = _pytss()
        scheme = tss.TPMT_SIG_SCHEME(scheme=tss.TPM2_ALG.NULL)
        if rsassa_sha256:
            scheme = tss.TPMT_SIG_SCHEME(scheme=tss.TPM2_ALG.RSASSA)
            scheme.details.any.hashAlg = tss.TPM2_ALG.SHA256
        selection = tss.TPML_PCR_SELECTION.parse("sha256:" + ",".join(map(str, range(24))))
        with self._esapi() as esapi:
            key = esapi.tr_from_tpmpublic(ak_handle)
            attest, signature = esapi.quote(key, selection, qualifying_data, scheme)
            if signature.sigAlg != tss.TPM2_ALG.RSASSA:
                raise AttesterError("Wrong signature, that should not occur")
            message = bytes(attest)
            if tss.TPMS_ATTEST.unmarshal(message)[0].type != tss.TPM2_ST.ATTEST_QUOTE:
                raise AttesterError("Not a quote, that should not occur")
            pcrs = self.read_pcrs_sha256(esapi)
        return Quote(message, signature.marshal(), bytes(signature.signature.rsassa.sig), pcrs)

    def public_key_der(self, handle: int) -> bytes:
        """The persistent RSA key's SubjectPublicKeyInfo, DER."""
        tss = _pytss()
        with self._esapi() as esapi:
            public, _, _ = esapi.read_public(esapi.tr_from_tpmpublic(handle))
        if public.publicArea.type != tss.TPM2_ALG.RSA:
            raise AttesterError("AK is not an RSA key")
        return bytes(public.publicArea.to_der())

    def nv_read(self, index: int) -> bytes:
        """The whole NV index, read in chunks with owner authorisation."""
        tss = _pytss()
        with self._esapi() as esapi:
            handle = esapi.tr_from_tpmpublic(index)
            public, _ = esapi.nv_read_public(handle)
            size = public.nvPublic.dataSize
            out = bytearray()
            while len(out) < size:
                chunk = min(NV_CHUNK, size - len(out))
                out += bytes(esapi.nv_read(handle, chunk, len(out), tss.ESYS_TR.OWNER))
        return bytes(out)

    def nv_write(self, index: int, data: bytes) -> None:
        """Write ``data`` into an owner NV index of exactly its size, (re)defining it as
        upstream's ``write_nv_index`` does."""
        tss = _pytss()
        with self._esapi() as esapi:
            handle = _defined_index(tss, esapi, index, len(data))
            for offset in range(0, len(data), NV_CHUNK):
                esapi.nv_write(handle, data[offset : offset + NV_CHUNK], offset, tss.ESYS_TR.OWNER)


def _defined_index(tss: Any, esapi: Any, index: int, size: int) -> Any:
    try:
        handle = esapi.tr_from_tpmpublic(index)
    except tss.TSS2_Exception:
        handle = None
    if handle is not None:
        public, _ = esapi.nv_read_public(handle)
        if public.nvPublic.dataSize == size:
            return handle
        esapi.nv_undefine_space(handle, tss.ESYS_TR.OWNER)
    attributes = tss.TPMA_NV.OWNERWRITE | tss.TPMA_NV.OWNERREAD
    nv_public = tss.TPM2B_NV_PUBLIC(
        nvPublic=tss.TPMS_NV_PUBLIC(
            nvIndex=index, nameAlg=tss.TPM2_ALG.SHA256, attributes=attributes, dataSize=size
        )
    )
    return esapi.nv_define_space(None, nv_public, tss.ESYS_TR.OWNER)


def _selected(selection: Any) -> list[int]:
    """PCR indexes of the SHA-256 bank in a TPML_PCR_SELECTION, ascending."""
    tss = _pytss()
    indexes: list[int] = []
    for i in range(selection.count):
        item = selection.pcrSelections[i]
        if item.hash != tss.TPM2_ALG.SHA256:
            continue
        bitmap = bytes(item.pcrSelect)[: item.sizeofSelect]
        indexes += [
            b * 8 + bit for b, byte in enumerate(bitmap) for bit in range(8) if byte >> bit & 1
        ]
    return indexes
