"""The documents of the loopback kube-apiserver (:mod:`tests.fakes.kubeapi`): JSON merge
patch (RFC 7386), JSON patch (RFC 6902), and the API error they answer with."""

from __future__ import annotations

import copy
from typing import Any


class ApiFailure(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise ApiFailure(422, "Invalid", f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json_patch(doc: Any, ops: list[dict[str, Any]]) -> Any:
    """RFC 6902: add, remove, replace, test."""
    doc = copy.deepcopy(doc)
    for op in ops:
        *parents, last = _pointer(op["path"])
        node = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.get(part)
            if node is None:
                raise ApiFailure(422, "Invalid", f"doc is missing path: {op['path']}")
        kind = op["op"]
        if kind == "test":
            if node.get(last) != op.get("value"):
                raise ApiFailure(422, "Invalid", f"testing value {op['path']} failed")
        elif kind == "remove":
            if isinstance(node, list):
                del node[int(last)]
            elif last not in node:
                raise ApiFailure(422, "Invalid", f"unable to remove nonexistent key: {last}")
            else:
                del node[last]
        elif kind in ("add", "replace"):
            if kind == "replace" and last not in node:
                raise ApiFailure(422, "Invalid", f"replace operation does not apply: {last}")
            if isinstance(node, list):
                node.insert(len(node) if last == "-" else int(last), op["value"])
            else:
                node[last] = op["value"]
        else:
            raise ApiFailure(422, "Invalid", f"unsupported op {kind!r}")
    return doc
