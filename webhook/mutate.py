"""The pod mutation, as upstream's ``remove-resourcespec.go``: pure, from a pod (decoded JSON)
to the JSON Patch (RFC 6902) that makes it a peer pod.

For a pod whose ``runtimeClassName`` is the target:

- requests and limits are summed over the containers and the init containers;
- cpu: the limit when the request is > 0 and the limit >= the request, else the request,
  rounded up to whole vCPUs -> ``io.katacontainers.config.hypervisor.default_vcpus``;
- memory: the same rule, rounded up to MiB -> ``...default_memory``;
- ``nvidia.com/gpu`` requests -> ``...default_gpus`` (GPU requests equal their limits);
- a value that is not > 0 sets no annotation, and one the pod already has stays;
- every container's and init container's ``resources`` are cleared, and the first
  container gets requests = limits = ``{<pod VM extended resource>: "1"}``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from runtime.errors import FormatError
from webhook.quantity import Format, Quantity, QuantityError

CPU_ANNOTATION = "io.katacontainers.config.hypervisor.default_vcpus"
MEMORY_ANNOTATION = "io.katacontainers.config.hypervisor.default_memory"
GPU_ANNOTATION = "io.katacontainers.config.hypervisor.default_gpus"
GPU_RESOURCE = "nvidia.com/gpu"
DEFAULT_RUNTIME_CLASS = "kata-remote"
DEFAULT_EXTENDED_RESOURCE = "kata.peerpods.io/vm"


class PodError(FormatError):
    """The admitted object is not a pod this webhook can read."""


@dataclass(frozen=True, slots=True)
class Totals:
    """Requests and limits summed over a pod's containers and init containers."""

    cpu_request: Quantity
    cpu_limit: Quantity
    memory_request: Quantity
    memory_limit: Quantity
    gpu_request: Quantity

    def annotations(self) -> dict[str, str]:
        """The sizing annotations these totals give (upstream's rule, see the module)."""
        out: dict[str, str] = {}
        cpu = _preferred(self.cpu_request, self.cpu_limit)
        if cpu is not None:
            out[CPU_ANNOTATION] = str(cpu.ceil())
        memory = _preferred(self.memory_request, self.memory_limit)
        if memory is not None:
            out[MEMORY_ANNOTATION] = str(memory.ceil_mib())
        if self.gpu_request.value > 0:
            out[GPU_ANNOTATION] = str(self.gpu_request)
        return out

    def describe(self) -> str:
        return (f"CPU Request: {self.cpu_request}, CPU Limit: {self.cpu_limit}, "
                f"Memory Request: {self.memory_request}, Memory Limit: {self.memory_limit}, "
                f"GPU Request: {self.gpu_request}")


@dataclass(frozen=True, slots=True)
class Mutation:
    totals: Totals | None  # None: the pod is not a peer pod, or has no container
    patch: tuple[dict[str, Any], ...]


def _preferred(request: Quantity, limit: Quantity) -> Quantity | None:
    if request.value != 0 and limit.value >= request.value:
        return limit
    if request.value > 0:
        return request
    return None


def _zero(fmt: Format) -> Quantity:
    return Quantity(Decimal(0), fmt)


def _quantity(value: Any, where: str) -> Quantity:
    if isinstance(value, bool) or not isinstance(value, (str, int, Decimal, float)):
        raise PodError(f"{where}: quantity {value!r} is not a string or a number")
    try:
        return Quantity.parse(value.strip() if isinstance(value, str) else str(value))
    except QuantityError as exc:
        raise PodError(f"{where}: {exc}") from None


def _dict(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise PodError(f"{where} is not an object")
    return value


def _containers(spec: Mapping[str, Any], key: str) -> Sequence[Mapping[str, Any]]:
    value = spec.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(c, Mapping) for c in value):
        raise PodError(f"spec.{key} is not a list of containers")
    return value


def _sum(containers: Iterable[tuple[str, Mapping[str, Any]]], kind: str, resource: str,
         fmt: Format) -> Quantity:
    total = _zero(fmt)
    for where, container in containers:
        resources = _dict(container.get("resources"), f"{where}.resources")
        values = _dict(resources.get(kind), f"{where}.resources.{kind}")
        if values.get(resource) is not None:
            total = total + _quantity(values[resource], f"{where}.resources.{kind}[{resource}]")
    return total


def totals(spec: Mapping[str, Any]) -> Totals:
    """Requests and limits of ``spec`` (a pod spec), summed as upstream sums them."""
    named = [(f"spec.containers[{i}]", c) for i, c in enumerate(_containers(spec, "containers"))]
    named += [(f"spec.initContainers[{i}]", c)
              for i, c in enumerate(_containers(spec, "initContainers"))]
    dec, binary = Format.DECIMAL_SI, Format.BINARY_SI
    return Totals(
        cpu_request=_sum(named, "requests", "cpu", dec),
        cpu_limit=_sum(named, "limits", "cpu", dec),
        memory_request=_sum(named, "requests", "memory", binary),
        memory_limit=_sum(named, "limits", "memory", binary),
        gpu_request=_sum(named, "requests", GPU_RESOURCE, dec),
    )


def escape(key: str) -> str:
    """A JSON Pointer reference token (RFC 6901): ``~`` -> ``~0``, ``/`` -> ``~1``."""
    return key.replace("~", "~0").replace("/", "~1")


def _annotation_ops(pod: Mapping[str, Any], wanted: Mapping[str, str]) -> list[dict[str, Any]]:
    metadata = _dict(pod.get("metadata"), "metadata")
    current = _dict(metadata.get("annotations"), "metadata.annotations")
    changed = {k: v for k, v in wanted.items() if current.get(k) != v}
    if not changed:
        return []
    if "metadata" not in pod or pod["metadata"] is None:
        return [{"op": "add", "path": "/metadata", "value": {"annotations": changed}}]
    if metadata.get("annotations") is None:
        return [{"op": "add", "path": "/metadata/annotations", "value": changed}]
    return [{"op": "add", "path": f"/metadata/annotations/{escape(k)}", "value": v}
            for k, v in changed.items()]


def _resource_ops(spec: Mapping[str, Any], key: str, first: dict[str, Any] | None
                  ) -> list[dict[str, Any]]:
    ops: list[dict[str, Any]] = []
    for index, container in enumerate(_containers(spec, key)):
        target = first if first is not None and index == 0 else {}
        current = container.get("resources")
        if current == target or (current is None and not target):
            continue
        ops.append({"op": "add", "path": f"/spec/{key}/{index}/resources", "value": target})
    return ops


def mutate(pod: Any, runtime_class: str, extended_resource: str) -> Mutation:
    """The patch that makes ``pod`` a peer pod; an empty one for other pods."""
    if not isinstance(pod, Mapping):
        raise PodError("the admitted object is not a JSON object")
    spec = _dict(pod.get("spec"), "spec")
    if spec.get("runtimeClassName") != runtime_class or not _containers(spec, "containers"):
        return Mutation(None, ())
    sums = totals(spec)
    one = {extended_resource: "1"}
    first = {"limits": dict(one), "requests": dict(one)}
    patch = [
        *_annotation_ops(pod, sums.annotations()),
        *_resource_ops(spec, "initContainers", None),
        *_resource_ops(spec, "containers", first),
    ]
    return Mutation(sums, tuple(patch))
