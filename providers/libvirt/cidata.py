"""The cloud-init NoCloud config drive: ``user-data``, ``meta-data``, ``vendor-data`` (pure).

The ISO carries the volume id ``cidata`` and Rock Ridge and Joliet names, as
``genisoimage -volid cidata -joliet -rock`` makes it, so both cloud-init and the project's
process-user-data find the files under their real names.
"""

from __future__ import annotations

import io

import pycdlib

VOLUME_ID = "cidata"
USER_DATA = "user-data"
META_DATA = "meta-data"
VENDOR_DATA = "vendor-data"


def meta_data(name: str) -> bytes:
    return f"local-hostname: {name}".encode()


def _iso9660_name(name: str) -> str:
    # level 2 d-characters: A-Z, 0-9 and '_'; the real name travels in Rock Ridge and Joliet
    return "/" + name.upper().replace("-", "_") + ".;1"


def build_iso(user_data: bytes, instance_name: str) -> bytes:
    """The config drive image for ``instance_name`` with ``user_data`` as given."""
    files = (
        (USER_DATA, user_data),
        (META_DATA, meta_data(instance_name)),
        (VENDOR_DATA, b""),
    )
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=2, vol_ident=VOLUME_ID, joliet=3, rock_ridge="1.09")
    try:
        for name, data in files:
            iso.add_fp(
                io.BytesIO(data), len(data), _iso9660_name(name),
                rr_name=name, joliet_path=f"/{name}",
            )
        out = io.BytesIO()
        iso.write_fp(out)
    finally:
        iso.close()
    return out.getvalue()


def read_iso(image: bytes) -> dict[str, bytes]:
    """The files of a config drive by their Rock Ridge names (for checks and tools)."""
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(image))
    try:
        files: dict[str, bytes] = {}
        for child in iso.list_children(rr_path="/"):
            if child.is_dot() or child.is_dotdot() or child.is_dir():
                continue
            name = child.rock_ridge.name().decode() if child.rock_ridge else ""
            if not name:
                continue
            data = io.BytesIO()
            iso.get_file_from_iso_fp(data, rr_path=f"/{name}")
            files[name] = data.getvalue()
        return files
    finally:
        iso.close()


def volume_id(image: bytes) -> str:
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(image))
    try:
        return bytes(iso.pvd.volume_identifier).decode().rstrip()
    finally:
        iso.close()
