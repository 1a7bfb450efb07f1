"""Pod VM instance names: ``podvm-<pod>-<sid[:8]>`` (upstream ``util/instance.go``)."""

from __future__ import annotations

import re

PREFIX = "podvm"
SANDBOX_ID_CHARS = 8
MAX_NAME_LENGTH = 63

_INVALID = re.compile(r"[^a-z0-9-]")


def sanitize(text: str) -> str:
    """Lower-case, and every character outside ``[a-z0-9-]`` becomes ``-``."""
    return _INVALID.sub("-", text.lower())


def instance_name(pod_name: str, sandbox_id: str, max_length: int = MAX_NAME_LENGTH) -> str:
    """The instance name for a pod; the pod part is cut so the whole fits ``max_length``."""
    pod_budget = max_length - len(PREFIX) - SANDBOX_ID_CHARS - 2
    pod = sanitize(pod_name)[:pod_budget]
    sid = sanitize(sandbox_id[:SANDBOX_ID_CHARS])
    return f"{PREFIX}-{pod}-{sid}"
