"""The pod's CSI block volumes: discovery at CreateVM, the two annotations at CreateContainer
(upstream's ``GetCSIVolumesForPod`` and ``proxy/service.go CreateContainer``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adaptor.proxy.cloudvolumes import (
    CLOUD_VOLUMES_KEY,
    TARGET_PATH_KEY,
    CloudVolume,
    go_json,
)
from adaptor.proxy.intercept import rewrite_create_container
from adaptor.volumes import DirectVolume, VolumeError, entry_name, scan
from protocols.kata import agent_pb2, oci_pb2
from protocols.ttrpc import Code, TTRPCError

UID = "0d7c5e3a-1111-4a4a-9f9f-000000000001"
OTHER_UID = "0d7c5e3a-2222-4a4a-9f9f-000000000002"


def volume_path(name: str, uid: str = UID) -> str:
    return f"/var/lib/kubelet/pods/{uid}/volumes/kubernetes.io~csi/{name}/mount"


def publish(directory: Path, path: str, info: object) -> Path:
    """What ``kata-runtime direct-volume add`` leaves behind for ``path``."""
    entry = directory / entry_name(path)
    entry.mkdir(parents=True)
    text = info if isinstance(info, str) else json.dumps(info)
    (entry / "mountInfo.json").write_text(text)
    return entry


def ebs(volume_id: str, **metadata: str) -> dict[str, object]:
    return {"volume-type": "block", "device": "/dev/xvdf", "fstype": "xfs",
            "metadata": {"cloud-volume-path": volume_id, **metadata}, "options": []}


def test_scan_order_filter_and_fallbacks(tmp_path: Path) -> None:
    publish(tmp_path, volume_path("pvc-b"), ebs("vol-0000000b"))
    publish(tmp_path, volume_path("pvc-a"), {"device": "/dev/sdc"})  # no cloud-volume-path
    publish(tmp_path, volume_path("pvc-c", OTHER_UID), ebs("vol-0000000c"))
    publish(tmp_path, f"/var/lib/kubelet/pods/{UID}/volumes/kubernetes.io~empty-dir/x",
            ebs("vol-0000000e"))  # not a CSI volume
    (tmp_path / entry_name(volume_path("pvc-d"))).mkdir()  # no mountInfo.json yet: skipped
    (tmp_path / "not base64!").mkdir()
    (tmp_path / entry_name(volume_path("pvc-f"))[:-1]).mkdir()  # bad padding
    (tmp_path / "file").write_text("x")

    every = scan(str(tmp_path))
    names = [entry_name(v.path) for v in every]
    assert names == sorted(names, key=str.encode)  # directory names in byte order
    assert {v.disk_id for v in every} == {"vol-0000000b", "/dev/sdc", "vol-0000000c"}
    mine = scan(str(tmp_path), UID)
    assert sorted(mine, key=lambda v: v.disk_id) == [
        DirectVolume(path=volume_path("pvc-a"), disk_id="/dev/sdc"),
        DirectVolume(path=volume_path("pvc-b"), disk_id="vol-0000000b", fs_type="xfs"),
    ]
    assert scan(str(tmp_path / "missing")) == []


def test_encryption_metadata(tmp_path: Path) -> None:
    publish(tmp_path, volume_path("pvc-e"),
            ebs("vol-0000000e", **{"encrypt-type": "LUKS", "kbs-key-id": "default/key/k1"}))
    assert scan(str(tmp_path), UID) == [DirectVolume(
        path=volume_path("pvc-e"), disk_id="vol-0000000e", fs_type="xfs",
        encrypt_type="LUKS", key_id="default/key/k1")]


@pytest.mark.parametrize(("info", "message"), [
    ("{not json", "is not valid JSON"),
    ("[]", "is not a JSON object"),
    ({"device": 7}, "device is not a string"),
    ({"device": "/dev/sdb", "metadata": "x"}, "metadata is not a JSON object"),
    ({"device": "", "metadata": {"cloud-volume-path": ""}}, "names no disk"),
    ({"metadata": {"cloud-volume-path": ["vol-1"]}}, "metadata.cloud-volume-path is not a"),
])
def test_malformed_mount_info(tmp_path: Path, info: object, message: str) -> None:
    entry = publish(tmp_path, volume_path("pvc-bad"), info)
    with pytest.raises(VolumeError, match=message) as caught:
        scan(str(tmp_path))
    assert str(entry / "mountInfo.json") in str(caught.value)


def test_go_json_shapes() -> None:
    # Expected texts as Go's encoding/json (1.22 and later) writes upstream's
    # map[string]util.CloudVolumeAnnotation: keys in byte order ("vol-10" before "vol-2"),
    # fields in declaration order, empty omitempty fields left out, <>& and U+2028/9 escaped.
    volumes = {
        "vol-2": CloudVolume("/b", "ext4", "2", "vol-2"),
        "vol-10": CloudVolume("/data<1>&", "xfs", "10", "d\u2028\u2029\b\f\x01\x7f\"\\é",
                              encrypt_type="LUKS", key_id="default/key/k"),
    }
    assert go_json(volumes) == (
        '{"vol-10":{"mount_point":"/data\\u003c1\\u003e\\u0026","fs_type":"xfs","lun":"10",'
        '"disk_id":"d\\u2028\\u2029\\b\\f\\u0001\x7f\\"\\\\é","encrypt_type":"LUKS",'
        '"key_id":"default/key/k"},'
        '"vol-2":{"mount_point":"/b","fs_type":"ext4","lun":"2","disk_id":"vol-2"}}'
    )


def container(*mounts: tuple[str, str], annotations: dict[str, str] | None = None) -> bytes:
    return agent_pb2.CreateContainerRequest(
        container_id="c1",
        OCI=oci_pb2.Spec(
            Mounts=[oci_pb2.Mount(destination=d, source=s, type="bind") for s, d in mounts],
            Annotations=annotations if annotations is not None else {
                "io.kubernetes.cri.sandbox-uid": UID},
        ),
    ).SerializeToString()


def rewritten(payload: bytes, directory: Path) -> dict[str, str]:
    out = rewrite_create_container("sb-1", payload, direct_volumes_dir=str(directory))
    request = agent_pb2.CreateContainerRequest()
    request.ParseFromString(out)
    return dict(request.OCI.Annotations)


def test_annotations_upstream_format(tmp_path: Path) -> None:
    a, b, c = volume_path("pvc-a"), volume_path("pvc-b"), volume_path("pvc-c")
    for path, volume_id in ((a, "vol-000000aa"), (b, "vol-000000bb"), (c, "vol-000000cc")):
        publish(tmp_path, path, ebs(volume_id) if path != b else {"device": volume_id})
    order = [v.path for v in scan(str(tmp_path), UID)]
    # The container mounts two of the pod's three volumes, after a non-CSI mount.
    used = [p for p in order if p != order[1]]
    payload = container(("/run/x/hostname", "/etc/hostname"), (used[1], "/data1"),
                        (used[0], "/data0"))
    annotations = rewritten(payload, tmp_path)
    # Upstream prefixes a comma for every match that is not the request's mount 0.
    assert annotations[TARGET_PATH_KEY] == f",{used[1]},{used[0]}"
    expected = {}
    for index, path in enumerate(order):
        if path in used:
            fs = "ext4" if path == b else "xfs"
            disk = {a: "vol-000000aa", b: "vol-000000bb", c: "vol-000000cc"}[path]
            dest = "/data0" if path == used[0] else "/data1"
            expected[f"vol-{index}"] = {"mount_point": dest, "fs_type": fs,
                                        "lun": str(index), "disk_id": disk}
    assert json.loads(annotations[CLOUD_VOLUMES_KEY]) == expected
    assert "vol-1" not in expected  # the skipped volume keeps its LUN


def test_no_csi_volume_leaves_the_request_untouched(tmp_path: Path) -> None:
    publish(tmp_path, volume_path("pvc-x", OTHER_UID), ebs("vol-0000000f"))
    payload = container(("/tmp/host", "/data"), (volume_path("pvc-x", OTHER_UID), "/other"))
    # Another pod's volume: target_path names it (upstream checks only the directory), but
    # cloud_volumes does not.
    assert CLOUD_VOLUMES_KEY not in rewritten(payload, tmp_path)
    plain = container(("/tmp/host", "/data"))
    assert rewrite_create_container("sb-1", plain, direct_volumes_dir=str(tmp_path)) == plain


def test_malformed_mount_info_fails_create_container(tmp_path: Path) -> None:
    publish(tmp_path, volume_path("pvc-bad"), "{")
    with pytest.raises(TTRPCError) as caught:
        rewrite_create_container("sb-1", container((volume_path("pvc-bad"), "/d")),
                                 direct_volumes_dir=str(tmp_path))
    assert caught.value.code == Code.INVALID_ARGUMENT
    assert "mountInfo.json is not valid JSON" in caught.value.message
