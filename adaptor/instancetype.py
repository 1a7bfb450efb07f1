"""Instance-type selection from a provider's catalogue, as upstream's
``SelectInstanceTypeToUse`` (``src/cloud-providers/util.go``).

Order: the ``machine_type`` annotation; else, with GPUs requested, a type found by
``GetBestFitInstanceTypeWithGPU``; else, when both vCPUs and memory are requested, a GPU-less
type found by ``GetBestFitInstanceType``; else the default type. The result must then pass
the allow-list check (``VerifyCloudInstanceType``). Error strings are upstream's, word for
word (they reach pod events).

Upstream sorts the catalogue by (GPUs, memory, vCPUs) and runs ``sort.Search`` over it with a
predicate ("enough memory and enough vCPUs") that is not monotonic in that order. The binary
search is reproduced step by step here, so the type chosen is upstream's even where it is not
the smallest fitting one, and "none found" is reported where upstream reports it. The one
difference: types of identical size are kept in catalogue order, where Go's unstable
``sort.Slice`` leaves their order unspecified.

Selection runs at StartVM, where upstream's providers run it, so its errors fail StartVM
(``creating an instance : failed to ...``) and not CreateVM.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from adaptor.errors import InstanceTypeError
from providers.base import InstanceTypeCatalogue, InstanceTypeInfo


def go_search(n: int, pred: Callable[[int], bool]) -> int:
    """Go's ``sort.Search``: the binary search it performs, whether ``pred`` is monotonic or not."""
    i, j = 0, n
    while i < j:
        h = (i + j) >> 1
        if not pred(h):
            i = h + 1
        else:
            j = h
    return i


def sort_types(specs: Iterable[InstanceTypeInfo]) -> list[InstanceTypeInfo]:
    """Upstream's ``SortInstanceTypesOnResources`` order: GPUs, then memory, then vCPUs."""
    return sorted(specs, key=lambda s: (s.gpus, s.memory_mib, s.vcpus))


def best_fit(specs: Sequence[InstanceTypeInfo], vcpus: int, memory_mib: int) -> str:
    types = [s for s in sort_types(specs) if s.gpus == 0]
    index = go_search(
        len(types), lambda i: types[i].memory_mib >= memory_mib and types[i].vcpus >= vcpus
    )
    if index == len(types):
        raise InstanceTypeError(
            f"no instance type found for the given vcpus ({vcpus}) and memory ({memory_mib})"
        )
    return types[index].name


def best_fit_gpu(
    specs: Sequence[InstanceTypeInfo], gpus: int, vcpus: int, memory_mib: int
) -> str:
    types = sort_types(specs)
    index = go_search(
        len(types),
        lambda i: types[i].gpus >= gpus
        and types[i].vcpus >= vcpus
        and types[i].memory_mib >= memory_mib,
    )
    if index == len(types):
        raise InstanceTypeError(
            f"no instance type found for the given GPUs ({gpus}), vCPUs ({vcpus}), "
            f"and memory ({memory_mib})"
        )
    return types[index].name


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
