"""CreateVM annotations -> pod identity and the requested resources (pure functions)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from adaptor.errors import InvalidRequest

SANDBOX_NAME = "io.kubernetes.cri.sandbox-name"
SANDBOX_NAMESPACE = "io.kubernetes.cri.sandbox-namespace"
_HV = "io.katacontainers.config.hypervisor."
MACHINE_TYPE = _HV + "machine_type"
IMAGE = _HV + "image"
DEFAULT_VCPUS = _HV + "default_vcpus"
DEFAULT_MEMORY = _HV + "default_memory"
INITDATA = _HV + "cc_init_data"
DEFAULT_GPUS = _HV + "default_gpus"
GPU_MODEL = _HV + "default_gpu_model"


@dataclass(frozen=True, slots=True)
class Resources:
    """What the pod asks for (0 / empty = not asked)."""

    instance_type: str = ""
    vcpus: int = 0
    memory_mib: int = 0
    gpus: int = 0
    gpu_model: str = ""
    image: str = ""


def _cri_o_parts(sandbox_name: str) -> list[str] | None:
    """CRI-O names sandboxes ``k8s_<pod>_<ns>_<uid>_<n>``."""
    parts = sandbox_name.split("_")
    if len(parts) > 1 and parts[0] == "k8s":
        return parts
    return None


def pod_name(annotations: Mapping[str, str]) -> str:
    raw = annotations.get(SANDBOX_NAME, "")
    parts = _cri_o_parts(raw)
    name = parts[1] if parts else raw
    if not name:
        raise InvalidRequest(f"pod name {SANDBOX_NAME} is missing in annotations")
    return name


def pod_namespace(annotations: Mapping[str, str]) -> str:
    namespace = annotations.get(SANDBOX_NAMESPACE, "")
    if not namespace:
        parts = _cri_o_parts(annotations.get(SANDBOX_NAME, ""))
        if parts and len(parts) > 2:
            namespace = parts[2]
    if not namespace:
        raise InvalidRequest(f"pod namespace {SANDBOX_NAMESPACE} is missing in annotations")
    return namespace


#: Upper bounds of the resource annotations: above any instance a cloud offers today (448
#: vCPUs, 24 TiB, 16 GPUs), far below what would overflow a provider's arithmetic.
MAX_VCPUS = 1024
MAX_MEMORY_MIB = 64 * 1024 * 1024  # 64 TiB
MAX_GPUS = 64
_DECIMAL = re.compile(r"[0-9]{1,12}")  # ASCII digits only: no sign, "_", or other scripts


def _count(annotations: Mapping[str, str], key: str, unit: str, limit: int) -> int:
    """A non-negative decimal of ASCII digits, at most ``limit``; empty or absent is 0.
    Upstream silently turns junk into 0, which then picks a wrong instance type; here junk
    is an error naming the annotation."""
    raw = annotations.get(key, "").strip()
    if not raw:
        return 0
    if not _DECIMAL.fullmatch(raw):
        raise InvalidRequest(
            f"annotation {key}: {raw[:40]!r} is not a valid {unit} (expected a non-negative "
            "decimal integer)"
        )
    value = int(raw, 10)
    if value > limit:
        raise InvalidRequest(f"annotation {key}: {value} is more than the limit of {limit} "
                             f"({unit})")
    return value


def resources(annotations: Mapping[str, str]) -> Resources:
    return Resources(
        instance_type=annotations.get(MACHINE_TYPE, "").strip(),
        vcpus=_count(annotations, DEFAULT_VCPUS, "vCPU count", MAX_VCPUS),
        memory_mib=_count(annotations, DEFAULT_MEMORY, "memory size in MiB", MAX_MEMORY_MIB),
        gpus=_count(annotations, DEFAULT_GPUS, "GPU count", MAX_GPUS),
        gpu_model=annotations.get(GPU_MODEL, "").strip(),
        image=annotations.get(IMAGE, "").strip(),
    )
