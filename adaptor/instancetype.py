"""Instance-type selection from a provider's catalogue (upstream ``SelectInstanceTypeToUse``).

Order: the ``machine_type`` annotation; else, with GPUs requested, the smallest type with
enough GPUs, vCPUs and memory; else, when both vCPUs and memory are requested, the smallest
GPU-less type with enough of both; else the default type. The result must then pass the
allow-list check. Error strings are upstream's, word for word (they reach pod events).

"Smallest" is the first match in (GPUs, memory, vCPUs) order. Upstream binary-searches that
order with a predicate that is not monotonic, which can miss a fitting type; a linear scan
returns the intended answer and agrees with upstream whenever upstream finds one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from adaptor.errors import InstanceTypeError
from providers.base import InstanceTypeCatalogue, InstanceTypeInfo


def sort_types(specs: Iterable[InstanceTypeInfo]) -> list[InstanceTypeInfo]:
    return sorted(specs, key=lambda s: (s.gpus, s.memory_mib, s.vcpus))


def best_fit(specs: Sequence[InstanceTypeInfo], vcpus: int, memory_mib: int) -> str:
    for spec in sort_types(s for s in specs if s.gpus == 0):
        if spec.memory_mib >= memory_mib and spec.vcpus >= vcpus:
            return spec.name
    raise InstanceTypeError(
        f"no instance type found for the given vcpus ({vcpus}) and memory ({memory_mib})"
    )


def best_fit_gpu(
    specs: Sequence[InstanceTypeInfo], gpus: int, vcpus: int, memory_mib: int
) -> str:
    for spec in sort_types(specs):
        if spec.gpus >= gpus and spec.vcpus >= vcpus and spec.memory_mib >= memory_mib:
            return spec.name
    raise InstanceTypeError(
        f"no instance type found for the given GPUs ({gpus}), vCPUs ({vcpus}), "
        f"and memory ({memory_mib})"
    )


def verify(instance_type: str, allowed: Sequence[str], default: str) -> str:
    if not instance_type:
        return default
    if not allowed and instance_type != default:
        raise InstanceTypeError(
            f'requested instance type ("{instance_type}") is not default ("{default}") '
            "and supported instance types list is empty"
        )
    if allowed and instance_type not in allowed:
        raise InstanceTypeError(
            f'requested instance type ("{instance_type}") is not part of supported '
            "instance types list"
        )
    return instance_type


def select_instance_type(
    catalogue: InstanceTypeCatalogue,
    *,
    requested: str | None,
    vcpus: int,
    memory_mib: int,
    gpus: int,
) -> tuple[str, str]:
    """Return ``(instance type, reason)``; raise :class:`InstanceTypeError` as upstream."""
    chosen, reason = "", "default instance type"
    if requested:
        chosen, reason = requested, "instance type annotation"
    elif gpus > 0:
        try:
            chosen = best_fit_gpu(catalogue.specs, gpus, vcpus, memory_mib)
        except InstanceTypeError as exc:
            raise InstanceTypeError(
                f"failed to get instance type based on GPU, vCPU, and memory annotations: {exc}"
            ) from None
        reason = "GPU annotation"
    elif vcpus and memory_mib:
        try:
            chosen = best_fit(catalogue.specs, vcpus, memory_mib)
        except InstanceTypeError as exc:
            raise InstanceTypeError(
                f"failed to get instance type based on vCPU and memory annotations: {exc}"
            ) from None
        reason = "vCPU and memory annotations"
    try:
        return verify(chosen, catalogue.allowed, catalogue.default), reason
    except InstanceTypeError as exc:
        raise InstanceTypeError(f"failed to verify instance type: {exc}") from None
