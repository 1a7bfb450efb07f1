"""The mutation against a reference written from upstream's rule with plain integers: random
pods, millicores and KiB, written in random but equivalent quantity forms."""

from __future__ import annotations

from typing import Any

import jsonpatch
from hypothesis import given, settings
from hypothesis import strategies as st

from webhook.mutate import CPU_ANNOTATION, GPU_ANNOTATION, MEMORY_ANNOTATION, mutate

KIB = 1024


def cpu_text(millis: int, form: int) -> str:
    if form == 0 or millis % 1000:
        return f"{millis}m" if form != 2 else f"{millis / 1000:.3f}"
    return str(millis // 1000)


def memory_text(kib: int, form: int) -> str:
    return [f"{kib}Ki", str(kib * KIB), f"{kib * KIB}e0"][form]


resources = st.fixed_dictionaries({}, optional={
    "cpu_req": st.integers(0, 16000), "cpu_lim": st.integers(0, 16000),
    "mem_req": st.integers(0, 2**24), "mem_lim": st.integers(0, 2**24),
    "gpu": st.integers(0, 4), "form": st.integers(0, 2),
})


def container(index: int, spec: dict[str, int]) -> dict[str, Any]:
    form = spec.get("form", 0)
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if "cpu_req" in spec:
        requests["cpu"] = cpu_text(spec["cpu_req"], form)
    if "cpu_lim" in spec:
        limits["cpu"] = cpu_text(spec["cpu_lim"], form)
    if "mem_req" in spec:
        requests["memory"] = memory_text(spec["mem_req"], form)
    if "mem_lim" in spec:
        limits["memory"] = memory_text(spec["mem_lim"], form)
    if "gpu" in spec:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = str(spec["gpu"])
    return {"name": f"c{index}", "resources": {"requests": requests, "limits": limits}}


def expected(specs: list[dict[str, int]]) -> dict[str, str]:
    def total(key: str) -> int:
        return sum(s.get(key, 0) for s in specs)
    out = {}
    for key, request, limit, unit in (
            (CPU_ANNOTATION, total("cpu_req"), total("cpu_lim"), 1000),
            (MEMORY_ANNOTATION, total("mem_req") * KIB, total("mem_lim") * KIB, 2**20)):
        chosen = limit if request > 0 and limit >= request else request
        if chosen > 0:
            out[key] = str(-(-chosen // unit))
    if total("gpu") > 0:
        out[GPU_ANNOTATION] = str(total("gpu"))
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(resources, min_size=1, max_size=4), st.lists(resources, max_size=2))
def test_annotations_follow_upstreams_rule(containers: list[dict[str, int]],
                                           init: list[dict[str, int]]) -> None:
    pod = {"metadata": {"name": "p"}, "spec": {
        "runtimeClassName": "kata-remote",
        "containers": [container(i, s) for i, s in enumerate(containers)],
        "initContainers": [container(i, s) for i, s in enumerate(init)]}}
    result = mutate(pod, "kata-remote", "kata.peerpods.io/vm")
    mutated = jsonpatch.apply_patch(pod, list(result.patch))
    assert mutated["metadata"].get("annotations", {}) == expected(containers + init)
    resources_after = [c.get("resources") for c in mutated["spec"]["containers"]]
    assert resources_after[0] == {"limits": {"kata.peerpods.io/vm": "1"},
                                  "requests": {"kata.peerpods.io/vm": "1"}}
    assert all(r in (None, {}) for r in resources_after[1:])
    assert all(c.get("resources") in (None, {}) for c in mutated["spec"]["initContainers"])
    # applying it again changes nothing
    assert mutate(mutated, "kata-remote", "kata.peerpods.io/vm").patch == ()
