"""The ``cloud_volumes`` annotation is byte for byte what Go's encoding/json makes of
upstream's ``map[string]util.CloudVolumeAnnotation`` (the Go peer's ``cloud-volumes-json``
mode encodes the same struct; ``\\b`` and ``\\f``, which Go before 1.22 writes differently,
are left out)."""

from __future__ import annotations

import dataclasses
import json
import subprocess

import pytest

from adaptor.proxy.cloudvolumes import CloudVolume, go_json
from tests.interop.peer import require_peer


def go_encoded(volumes: dict[str, CloudVolume]) -> str:
    entries = [{"key": key, "volume": dataclasses.asdict(volume)}
               for key, volume in volumes.items()]
    done = subprocess.run([str(require_peer()), "cloud-volumes-json"],
                          input=json.dumps(entries).encode(), capture_output=True,
                          timeout=30, check=True)
    return done.stdout.decode("utf-8")


CASES = {
    "one": {"vol-0": CloudVolume("/data", "ext4", "0", "vol-0123456789abcdef0")},
    "several": {
        f"vol-{i}": CloudVolume(f"/mnt/v{i}", "xfs" if i % 2 else "ext4", str(i),
                                f"/subscriptions/s/resourceGroups/rg/providers/"
                                f"Microsoft.Compute/disks/d{i}")
        for i in (0, 1, 2, 3, 9, 10, 11, 100)
    },
    "encrypted": {
        "vol-0": CloudVolume("/secure", "ext4", "0", "vol-0a", encrypt_type="LUKS",
                             key_id="default/key/volume-enc-key"),
        "vol-1": CloudVolume("/plain", "ext4", "1", "vol-0b", fs_group="2000"),
    },
    "escaping": {
        "vol-<0>": CloudVolume("/a&b<c>\"d\"\\e", "ext4", "0", "tab\there\nnl\r\x00\x1f\x7f",
                               key_id="ünïcödé \u2028\u2029 \U0001f512 </script>"),
        "vol-é": CloudVolume("/z", "ext4", "1", "x", encrypt_type="&amp;"),
        "VOL-0": CloudVolume("/Z", "ext4", "2", "y"),
    },
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_byte_identical_to_go(case: str) -> None:
    volumes = CASES[case]
    assert go_json(volumes) == go_encoded(volumes)
