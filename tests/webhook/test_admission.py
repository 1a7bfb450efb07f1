"""The mutation table, over real HTTPS: AdmissionReview in, JSONPatch out, applied with the
``jsonpatch`` library to check the pod the API server would store."""

from __future__ import annotations

import base64
import copy
import json
from dataclasses import dataclass, field
from typing import Any

import jsonpatch
import pytest

from tests.webhook.conftest import Running, WebhookPki, make_settings, start

VCPUS = "io.katacontainers.config.hypervisor.default_vcpus"
MEMORY = "io.katacontainers.config.hypervisor.default_memory"
GPUS = "io.katacontainers.config.hypervisor.default_gpus"
VM = {"limits": {"kata.peerpods.io/vm": "1"}, "requests": {"kata.peerpods.io/vm": "1"}}


def res(requests: dict[str, Any] | None = None, limits: dict[str, Any] | None = None
        ) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if requests is not None:
        out["requests"] = requests
    if limits is not None:
        out["limits"] = limits
    return out


def container(name: str, resources: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "image": "nginx"}
    if resources is not None:
        out["resources"] = resources
    return out


def pod(containers: list[dict[str, Any]], init: list[dict[str, Any]] | None = None,
        runtime_class: str | None = "kata-remote",
        annotations: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": containers}
    if init is not None:
        spec["initContainers"] = init
    if runtime_class is not None:
        spec["runtimeClassName"] = runtime_class
    metadata: dict[str, Any] = {"name": "p", "namespace": "default"}
    if annotations is not None:
        metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def review(obj: Any, uid: str = "7f0b2a6c-1e7c-4a44-9d3b-0c6d1b0a9e01") -> bytes:
    return json.dumps({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "resource": {"group": "", "version": "v1", "resource": "pods"},
                    "namespace": "default", "operation": "CREATE", "object": obj},
    }).encode()


@dataclass(frozen=True)
class Case:
    id: str
    pod: dict[str, Any]
    annotations: dict[str, str]  # the pod's annotations after the patch
    # resources of each container / init container after the patch (None: no key)
    containers: list[Any] = field(default_factory=lambda: [VM])
    init: list[Any] | None = None


def one(resources: dict[str, Any]) -> dict[str, Any]:
    return pod([container("c", resources)])


CASES = [
    Case("cpu-limit-over-request", one(res({"cpu": "1"}, {"cpu": "2"})), {VCPUS: "2"}),
    Case("cpu-limit-equals-request", one(res({"cpu": "2"}, {"cpu": "2"})), {VCPUS: "2"}),
    Case("cpu-limit-under-request", one(res({"cpu": "3"}, {"cpu": "1"})), {VCPUS: "3"}),
    Case("cpu-millis-round-up", one(res({"cpu": "500m"})), {VCPUS: "1"}),
    Case("cpu-fraction-limit", one(res({"cpu": "1.5"}, {"cpu": "2500m"})), {VCPUS: "3"}),
    Case("cpu-tiny", one(res({"cpu": "1m"})), {VCPUS: "1"}),
    Case("cpu-exponent", one(res({"cpu": "2e0"}, {"cpu": "4e0"})), {VCPUS: "4"}),
    Case("cpu-json-number", one(res({"cpu": 0.5}, {"cpu": 2})), {VCPUS: "2"}),
    Case("cpu-only-limits", one(res(None, {"cpu": "2"})), {}),  # upstream: request 0 -> none
    Case("cpu-only-requests", one(res({"cpu": "2"})), {VCPUS: "2"}),
    Case("cpu-summed", pod([container("a", res({"cpu": "600m"})),
                            container("b", res({"cpu": "600m"}))]),
         {VCPUS: "2"}, containers=[VM, {}]),
    Case("memory-limit-over-request", one(res({"memory": "100Mi"}, {"memory": "200Mi"})),
         {MEMORY: "200"}),
    Case("memory-limit-under-request", one(res({"memory": "1Gi"}, {"memory": "512Mi"})),
         {MEMORY: "1024"}),
    Case("memory-decimal-rounds-up", one(res({"memory": "1G"})), {MEMORY: "954"}),
    Case("memory-bytes", one(res({"memory": "128974848"})), {MEMORY: "123"}),
    Case("memory-one-byte-over", one(res({"memory": "134217729"})), {MEMORY: "129"}),
    Case("memory-fraction", one(res({"memory": "1.5Gi"})), {MEMORY: "1536"}),
    Case("memory-only-limits", one(res(None, {"memory": "1Gi"})), {}),
    Case("memory-summed", pod([container("a", res({"memory": "1Gi"})),
                               container("b", res({"memory": "512Mi"}))]),
         {MEMORY: "1536"}, containers=[VM, {}]),
    Case("cpu-and-memory", one(res({"cpu": "250m", "memory": "64Mi"},
                                   {"cpu": "500m", "memory": "128Mi"})),
         {VCPUS: "1", MEMORY: "128"}),
    Case("gpus", pod([container("a", res({"nvidia.com/gpu": "1"}, {"nvidia.com/gpu": "1"})),
                      container("b", res({"nvidia.com/gpu": "2"}, {"nvidia.com/gpu": "2"}))]),
         {GPUS: "3"}, containers=[VM, {}]),
    Case("gpus-only-limits", one(res(None, {"nvidia.com/gpu": "1"})), {}),
    Case("gpus-with-cpu-memory", one(res({"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
                                         {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"})),
         {VCPUS: "4", MEMORY: "16384", GPUS: "1"}),
    Case("init-containers-summed",
         pod([container("c", res({"cpu": "1", "memory": "1Gi"}))],
             init=[container("i", res({"cpu": "2", "memory": "256Mi"}, {"cpu": "2"}))]),
         {VCPUS: "3", MEMORY: "1280"}, init=[{}]),
    Case("init-container-without-resources",
         pod([container("c", res({"cpu": "1"}))], init=[container("i")]),
         {VCPUS: "1"}, init=[None]),
    Case("no-resources", pod([container("a"), container("b")]), {}, containers=[VM, None]),
    Case("other-resources-cleared", one(res({"ephemeral-storage": "1Gi",
                                             "example.com/dev": "1"})), {}),
    Case("existing-annotations-kept", pod([container("c", res({"cpu": "2"}))],
                                          annotations={"a/b": "c", VCPUS: "8", MEMORY: "64"}),
         {"a/b": "c", VCPUS: "2", MEMORY: "64"}),
    Case("empty-annotations", pod([container("c", res({"cpu": "1"}))], annotations={}),
         {VCPUS: "1"}),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
async def test_mutation_table(webhook: Running, case: Case) -> None:
    status, body = await webhook.post(review(case.pod))
    assert status == 200
    response = body["response"]
    assert body["apiVersion"] == "admission.k8s.io/v1" and body["kind"] == "AdmissionReview"
    assert response["uid"] == "7f0b2a6c-1e7c-4a44-9d3b-0c6d1b0a9e01"
    assert response["allowed"] is True
    assert response["patchType"] == "JSONPatch"
    patch = json.loads(base64.b64decode(response["patch"]))
    mutated = jsonpatch.apply_patch(case.pod, patch)

    assert mutated["metadata"].get("annotations", {}) == case.annotations
    assert [c.get("resources") for c in mutated["spec"]["containers"]] == case.containers
    if case.init is not None:
        assert [c.get("resources") for c in mutated["spec"]["initContainers"]] == case.init
    # nothing else changed
    for c in mutated["spec"]["containers"] + mutated["spec"].get("initContainers", []):
        c.pop("resources", None)
    original = copy.deepcopy(case.pod)
    for c in original["spec"]["containers"] + original["spec"].get("initContainers", []):
        c.pop("resources", None)
    mutated["metadata"].pop("annotations", None)
    original["metadata"].pop("annotations", None)
    assert mutated == original

    # reinvocation (reinvocationPolicy: IfNeeded) changes nothing more
    _, again = await webhook.post(review(jsonpatch.apply_patch(case.pod, patch)))
    assert again["response"] == {"uid": response["uid"], "allowed": True}


@pytest.mark.parametrize("runtime_class", [None, "kata", "kata-qemu", "runc", ""])
async def test_other_runtime_classes_are_untouched(webhook: Running,
                                                   runtime_class: str | None) -> None:
    obj = pod([container("c", res({"cpu": "2", "memory": "1Gi"}, {"cpu": "4"}))],
              runtime_class=runtime_class)
    status, body = await webhook.post(review(obj, uid="u-1"))
    assert status == 200
    assert body["response"] == {"uid": "u-1", "allowed": True}


async def test_pod_without_containers_is_left_to_validation(webhook: Running) -> None:
    for containers in ([], None):
        obj = pod([])
        obj["spec"]["containers"] = containers
        _, body = await webhook.post(review(obj, uid="u-2"))
        assert body["response"] == {"uid": "u-2", "allowed": True}


async def test_annotation_keys_are_escaped_in_the_patch(webhook: Running) -> None:
    obj = pod([container("c", res({"cpu": "1"}))], annotations={"x": "y"})
    _, body = await webhook.post(review(obj))
    patch = json.loads(base64.b64decode(body["response"]["patch"]))
    assert patch[0] == {"op": "add", "value": "1",
                        "path": "/metadata/annotations/io.katacontainers.config.hypervisor."
                                "default_vcpus"}
    assert patch[-1] == {"op": "add", "path": "/spec/containers/0/resources", "value": VM}


async def test_target_runtime_class_and_resource_from_the_environment(pki: WebhookPki) -> None:
    settings = make_settings(pki, {"TARGET_RUNTIMECLASS": "peer",
                                   "POD_VM_EXTENDED_RESOURCE": "example.com/vm"})
    async for running in start(pki, settings):
        _, untouched = await running.post(review(one(res({"cpu": "1"}))))
        assert "patch" not in untouched["response"]
        obj = pod([container("c", res({"cpu": "1"}))], runtime_class="peer")
        _, body = await running.post(review(obj))
        mutated = jsonpatch.apply_patch(obj, json.loads(base64.b64decode(
            body["response"]["patch"])))
        assert mutated["spec"]["containers"][0]["resources"] == {
            "limits": {"example.com/vm": "1"}, "requests": {"example.com/vm": "1"}}
        assert mutated["metadata"]["annotations"] == {VCPUS: "1"}
