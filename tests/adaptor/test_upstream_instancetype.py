"""Instance-type selection matches upstream's, including its non-monotonic binary search.

The reference below transliterates upstream v0.22.0 ``src/cloud-providers/util.go``:
``SelectInstanceTypeToUse``, ``SortInstanceTypesOnResources``, ``GetBestFitInstanceType``,
``FilterOutGPUInstances``, ``GetBestFitInstanceTypeWithGPU``, ``VerifyCloudInstanceType``,
with Go's ``sort.Search`` (``src/sort/search.go``) written out as Go writes it.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adaptor.errors import InstanceTypeError
from adaptor.instancetype import select_instance_type
from providers.base import InstanceTypeCatalogue, InstanceTypeInfo


# --- upstream, transliterated line by line -------------------------------------------------
def go_sort_search(n: int, f) -> int:  # type: ignore[no-untyped-def]
    # func Search(n int, f func(int) bool) int
    i, j = 0, n
    while i < j:
        h = int((i + j) // 2)  # h := int(uint(i+j) >> 1)
        if not f(h):
            i = h + 1
        else:
            j = h
    return i


def upstream_select(spec: dict, spec_list: list[dict], valid: list[str], default: str) -> str:
    # SortInstanceTypesOnResources: by GPUs, then Memory, then VCPUs.
    spec_list = sorted(spec_list, key=lambda s: (s["GPUs"], s["Memory"], s["VCPUs"]))
    instance_type = ""
    if spec["InstanceType"] != "":
        instance_type = spec["InstanceType"]
    elif spec["GPUs"] > 0:
        # GetBestFitInstanceTypeWithGPU
        index = go_sort_search(len(spec_list), lambda i: spec_list[i]["GPUs"] >= spec["GPUs"]
                               and spec_list[i]["VCPUs"] >= spec["VCPUs"]
                               and spec_list[i]["Memory"] >= spec["Memory"])
        if index == len(spec_list):
            raise LookupError("gpu")
        instance_type = spec_list[index]["InstanceType"]
    elif spec["VCPUs"] != 0 and spec["Memory"] != 0:
        # GetBestFitInstanceType, after FilterOutGPUInstances
        filtered = [s for s in spec_list if s["GPUs"] == 0]
        index = go_sort_search(len(filtered), lambda i: filtered[i]["Memory"] >= spec["Memory"]
                               and filtered[i]["VCPUs"] >= spec["VCPUs"])
        if index == len(filtered):
            raise LookupError("cpu")
        instance_type = filtered[index]["InstanceType"]
    # VerifyCloudInstanceType
    if instance_type == "":
        return default
    if len(valid) == 0 and instance_type != default:
        raise LookupError("verify")
    if len(valid) > 0 and instance_type not in valid:
        raise LookupError("verify")
    return instance_type
# -------------------------------------------------------------------------------------------


KIND = {"gpu": "failed to get instance type based on GPU", "cpu": "failed to get instance type "
        "based on vCPU and memory", "verify": "failed to verify instance type"}

sizes = st.tuples(st.integers(0, 2), st.integers(1, 64), st.integers(1, 16))


@st.composite
def cases(draw):  # type: ignore[no-untyped-def]
    # Distinct (GPUs, memory, vCPUs) keys: Go's sort.Slice leaves equal keys in no set order.
    keys = draw(st.lists(sizes, min_size=0, max_size=9, unique=True))
    types = [InstanceTypeInfo(f"t{n}", vcpus=v, memory_mib=m * 1024, gpus=g)
             for n, (g, m, v) in enumerate(keys)]
    types = draw(st.permutations(types))
    names = [t.name for t in types] + ["other"]
    allowed = draw(st.lists(st.sampled_from(names), unique=True, max_size=4))
    default = draw(st.sampled_from(names))
    requested = draw(st.one_of(st.just(""), st.sampled_from(names)))
    request = (requested, draw(st.integers(0, 16)), draw(st.integers(0, 64)) * 1024,
               draw(st.integers(0, 3)))
    return InstanceTypeCatalogue(default, tuple(allowed), tuple(types)), request


@settings(max_examples=600, deadline=None)
@given(cases())
def test_selection_matches_upstream(case) -> None:  # type: ignore[no-untyped-def]
    catalogue, (requested, vcpus, memory, gpus) = case
    spec = {"InstanceType": requested, "VCPUs": vcpus, "Memory": memory, "GPUs": gpus}
    spec_list = [{"InstanceType": t.name, "VCPUs": t.vcpus, "Memory": t.memory_mib,
                  "GPUs": t.gpus} for t in catalogue.specs]
    try:
        expected = upstream_select(spec, spec_list, list(catalogue.allowed), catalogue.default)
    except LookupError as exc:
        with pytest.raises(InstanceTypeError) as info:
            select_instance_type(catalogue, requested=requested or None, vcpus=vcpus,
                                 memory_mib=memory, gpus=gpus)
        assert str(info.value).startswith(KIND[str(exc)])
        return
    chosen, _ = select_instance_type(catalogue, requested=requested or None, vcpus=vcpus,
                                     memory_mib=memory, gpus=gpus)
    assert chosen == expected


def test_issue_example_follows_the_binary_search() -> None:
    # A (8 vCPU, 4 GiB), B (2, 8 GiB), C (4, 16 GiB), request 4 vCPU / 2 GiB: upstream's
    # sort.Search probes B (fails), then C (fits), and picks C although A fits and is smaller.
    catalogue = InstanceTypeCatalogue("A", ("A", "B", "C"), (
        InstanceTypeInfo("A", 8, 4096), InstanceTypeInfo("B", 2, 8192),
        InstanceTypeInfo("C", 4, 16384)))
    chosen, _ = select_instance_type(catalogue, requested=None, vcpus=4, memory_mib=2048, gpus=0)
    assert chosen == "C"
