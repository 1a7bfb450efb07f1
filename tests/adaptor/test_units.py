"""Pure builders: names, annotations, instance-type selection, the sandbox record."""

from __future__ import annotations

import pytest

from adaptor import annotations as ann
from adaptor.errors import InstanceTypeError, InvalidRequest
from adaptor.instancetype import select_instance_type
from adaptor.naming import instance_name
from adaptor.sandbox import SandboxRecord, SandboxState, request_fingerprint
from providers.base import InstanceSpec, InstanceTypeCatalogue, InstanceTypeInfo


def test_instance_name() -> None:
    assert instance_name("nginx", "0123456789abcdef") == "podvm-nginx-01234567"
    assert instance_name("My_Pod.v2", "ABCDEF0123") == "podvm-my-pod-v2-abcdef01"
    long = instance_name("a" * 100, "f" * 64)
    assert long == "podvm-" + "a" * 48 + "-ffffffff" and len(long) == 63
    assert instance_name("p", "abc") == "podvm-p-abc"


def test_annotations() -> None:
    base = {ann.SANDBOX_NAME: "web", ann.SANDBOX_NAMESPACE: "ns"}
    assert (ann.pod_name(base), ann.pod_namespace(base)) == ("web", "ns")
    crio = {ann.SANDBOX_NAME: "k8s_web_team_uid_0"}
    assert (ann.pod_name(crio), ann.pod_namespace(crio)) == ("web", "team")
    res = ann.resources({ann.DEFAULT_VCPUS: " 4 ", ann.DEFAULT_MEMORY: "", ann.IMAGE: "img",
                         ann.DEFAULT_GPUS: "0", ann.MACHINE_TYPE: "m5"})
    assert res == ann.Resources(instance_type="m5", vcpus=4, memory_mib=0, image="img")
    for bad in ("1.5", "0x10", "-1", "four"):
        with pytest.raises(InvalidRequest, match="default_vcpus"):
            ann.resources({ann.DEFAULT_VCPUS: bad})


TYPES = InstanceTypeCatalogue(
    default="small",
    allowed=("small", "medium", "big", "gpu1", "gpu2"),
    specs=(
        InstanceTypeInfo("big", 8, 32768),
        InstanceTypeInfo("gpu2", 16, 65536, gpus=2),
        InstanceTypeInfo("small", 2, 4096),
        InstanceTypeInfo("gpu1", 8, 32768, gpus=1),
        InstanceTypeInfo("medium", 4, 8192),
    ),
)


@pytest.mark.parametrize(
    ("requested", "vcpus", "mem", "gpus", "expected"),
    [
        (None, 0, 0, 0, "small"),
        (None, 4, 0, 0, "small"),  # both vCPUs and memory are needed for a best fit
        (None, 3, 4096, 0, "medium"),
        (None, 1, 9000, 0, "big"),  # GPU types are never picked without GPUs
        (None, 0, 0, 1, "gpu1"),
        (None, 9, 0, 1, "gpu2"),
        ("big", 1, 1, 0, "big"),
    ],
)
def test_select_instance_type(
    requested: str | None, vcpus: int, mem: int, gpus: int, expected: str
) -> None:
    chosen, _ = select_instance_type(TYPES, requested=requested, vcpus=vcpus,
                                     memory_mib=mem, gpus=gpus)
    assert chosen == expected


def test_select_instance_type_errors() -> None:
    with pytest.raises(InstanceTypeError) as info:
        select_instance_type(TYPES, requested=None, vcpus=1, memory_mib=1, gpus=4)
    assert str(info.value) == (
        "failed to get instance type based on GPU, vCPU, and memory annotations: no instance "
        "type found for the given GPUs (4), vCPUs (1), and memory (1)")
    no_list = InstanceTypeCatalogue(default="small", specs=(InstanceTypeInfo("small", 2, 4096),))
    with pytest.raises(InstanceTypeError) as info:
        select_instance_type(no_list, requested="big", vcpus=0, memory_mib=0, gpus=0)
    assert str(info.value) == (
        'failed to verify instance type: requested instance type ("big") is not default '
        '("small") and supported instance types list is empty')


def test_record_round_trips_through_json() -> None:
    record = SandboxRecord(
        sandbox_id="sb", pod_name="p", pod_namespace="ns", netns_path="/run/netns/x",
        instance_name="podvm-p-sb", socket_path="/run/peerpod/pods/sb/agent.ttrpc",
        spec=InstanceSpec(instance_type="t3", vcpus=2, memory_mib=4096, volumes=("v1",)),
        apf_json="{}", user_data="#cloud-config\n", fingerprint="f",
        state=SandboxState.RUNNING, instance_id="i-1", instance_ips=("127.0.0.2",),
    )
    assert SandboxRecord.from_json(record.to_json()) == record
    with pytest.raises(ValueError, match="unsupported sandbox record version"):
        SandboxRecord.from_dict({"version": 99})
    a = request_fingerprint("sb", {"a": "1", "b": "2"}, "/n")
    assert a == request_fingerprint("sb", {"b": "2", "a": "1"}, "/n")
    assert a != request_fingerprint("sb", {"a": "1", "b": "3"}, "/n")
