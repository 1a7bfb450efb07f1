"""The pod VM's volumes are private: mode 0600, owned by the user QEMU runs as.

The config drive carries the VM's TLS key, ``auth.json`` and initdata; the root overlay its
file system. On the test driver the requested permissions show in the volume XML; on a real
libvirtd (in a network namespace) they show on disk.
"""

from __future__ import annotations

import os
import stat
import uuid
import xml.etree.ElementTree as ET

import pytest

from providers.libvirt import storage, volume
from tests.providers.libvirt.conftest import DriverEnv, libvirt, make_request
from tests.providers.libvirt.libvirtd import URI, Libvirtd

CAPS_DAC = """<capabilities><host>
  <secmodel><model>none</model><doi>0</doi></secmodel>
  <secmodel><model>dac</model><doi>0</doi>
    <baselabel type='kvm'>+64055:+994</baselabel>
    <baselabel type='qemu'>+64055:+994</baselabel>
  </secmodel>
</host></capabilities>"""


def permissions(volume_xml: str) -> dict[str, str]:
    element = ET.fromstring(volume_xml).find("target/permissions")
    assert element is not None
    return {child.tag: (child.text or "") for child in element}


def test_qemu_owner_is_the_dac_base_label() -> None:
    assert volume.qemu_owner(CAPS_DAC) == volume.Owner(uid=64055, gid=994)


@pytest.mark.parametrize(
    "secmodels",
    [
        "",  # no security model reported
        "<secmodel><model>testSecurity</model><doi></doi></secmodel>",
        "<secmodel><model>dac</model><doi>0</doi></secmodel>",  # no base label
        "<secmodel><model>dac</model><baselabel type='kvm'>+1:+1</baselabel>"
        "<baselabel type='qemu'>+2:+2</baselabel></secmodel>",  # labels disagree
        "<secmodel><model>dac</model><baselabel type='kvm'>qemu:kvm</baselabel></secmodel>",
        # digits, but not ASCII ones
        "<secmodel><model>dac</model><baselabel type='kvm'>+\u0661:+\u0661</baselabel>"
        "</secmodel>",
        "<secmodel><model>selinux</model>"
        "<baselabel type='kvm'>system_u:system_r:svirt_t:s0</baselabel></secmodel>",
    ],
)
def test_qemu_owner_unknown(secmodels: str) -> None:
    assert volume.qemu_owner(f"<capabilities><host>{secmodels}</host></capabilities>") is None


def test_volume_xml_is_private_with_and_without_an_owner() -> None:
    owner = volume.Owner(uid=64055, gid=994)
    assert permissions(volume.raw_xml("a.iso", 1024, owner)) == {
        "mode": "0600", "owner": "64055", "group": "994",
    }
    assert permissions(volume.overlay_xml("a.qcow2", 1024, "/p/base", "qcow2")) == {
        "mode": "0600",
    }


async def test_test_driver_volumes_are_created_0600(env: DriverEnv) -> None:
    provider = env.provider()
    request = make_request()
    try:
        await provider.create_instance(request)
        pool = env.pool()
        for suffix in ("-root.qcow2", "-cloudinit.iso"):
            vol = pool.storageVolLookupByName(request.name + suffix)  # type: ignore[attr-defined]
            # the test driver names no DAC label: libvirt picks the owner
            assert permissions(vol.XMLDesc(0)) == {"mode": "0600"}
    finally:
        await provider.aclose()


def disk_mode(path: str) -> tuple[int, int, int]:
    info = os.stat(path)
    return stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid


@pytest.mark.libvirt
@pytest.mark.root
@pytest.mark.netns
def test_real_pool_volumes_are_0600_on_disk(libvirtd: Libvirtd) -> None:
    conn = libvirt.open(URI)
    pool = conn.storagePoolLookupByName(libvirtd.pool)
    name = f"podvm-mode-{uuid.uuid4().hex[:8]}"
    names = volume.VolumeNames.for_instance(name)
    try:
        owner = storage.qemu_owner(conn)
        assert owner is not None  # the qemu driver always reports its DAC label
        root_path = storage.create_overlay(conn, pool, names.root, libvirtd.base_volume, 2)
        iso = storage.create_raw(pool, names.cidata, 64 * 1024)
        storage.stream_upload(conn, iso, b"\x00" * 64 * 1024)
        for path in (root_path, iso.path()):
            assert disk_mode(path) == (0o600, owner.uid, owner.gid)
    finally:
        for vol_name in (names.root, names.cidata):
            storage.delete_by_name(pool, vol_name)
        conn.close()
