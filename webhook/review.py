"""``admission.k8s.io/v1`` AdmissionReview: read a request, write a response.

Errors follow controller-runtime, which upstream's webhook runs on: a review that cannot be
read is answered with HTTP 200 and a response that denies, ``status.code`` 400 (413 for a
body over 7 MiB) and the reason in ``status.message``; the API server then rejects the pod
with that message.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from runtime.errors import FormatError

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
MAX_BODY = 7 * 1024 * 1024  # controller-runtime's maxRequestSize
CONTENT_TYPE = "application/json"


class ReviewError(FormatError):
    """The AdmissionReview cannot be read; ``code`` is the status code of the answer."""

    def __init__(self, message: str, code: int = 400) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class AdmissionRequest:
    uid: str
    operation: str
    namespace: str
    name: str  # the pod's name, or its generateName + "*" before the API server names it
    object: Any


def _pod_name(request: Mapping[str, Any]) -> str:
    obj = request.get("object")
    metadata = obj.get("metadata") if isinstance(obj, Mapping) else None
    if isinstance(metadata, Mapping):
        if metadata.get("name"):
            return str(metadata["name"])
        if metadata.get("generateName"):
            return f"{metadata['generateName']}*"
    return str(request.get("name") or "?")


def parse(body: bytes, content_type: str | None) -> AdmissionRequest:
    """The request of an AdmissionReview; a :class:`ReviewError` when there is none."""
    if not body:
        raise ReviewError("request body is empty")
    if len(body) > MAX_BODY:
        raise ReviewError(f"request entity is too large; limit is {MAX_BODY} bytes", 413)
    if content_type != CONTENT_TYPE:
        raise ReviewError(f"contentType={content_type or ''}, expected {CONTENT_TYPE}")
    try:
        review = json.loads(body, parse_float=Decimal)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ReviewError(f"couldn't decode the AdmissionReview: {exc}") from None
    if not isinstance(review, dict):
        raise ReviewError("couldn't decode the AdmissionReview: not a JSON object")
    if (review.get("apiVersion"), review.get("kind")) != (API_VERSION, KIND):
        raise ReviewError(f"unsupported review {review.get('apiVersion')!r}/"
                          f"{review.get('kind')!r}, expected {API_VERSION}/{KIND}")
    request = review.get("request")
    if not isinstance(request, dict):
        raise ReviewError("got an empty AdmissionRequest")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise ReviewError("the AdmissionRequest has no uid")
    return AdmissionRequest(
        uid=uid,
        operation=str(request.get("operation") or ""),
        namespace=str(request.get("namespace") or ""),
        name=_pod_name(request),
        object=request.get("object"),
    )


def _review(response: dict[str, Any]) -> bytes:
    return json.dumps({"apiVersion": API_VERSION, "kind": KIND, "response": response},
                      separators=(",", ":")).encode()


def allowed(uid: str, patch: Sequence[Mapping[str, Any]]) -> bytes:
    """Allow, with ``patch`` as a base64 JSONPatch when it is not empty."""
    response: dict[str, Any] = {"uid": uid, "allowed": True}
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(
            json.dumps(list(patch), separators=(",", ":")).encode()).decode()
    return _review(response)


def denied(uid: str, code: int, message: str) -> bytes:
    """Deny with ``status.code`` and ``status.message``, as controller-runtime's Errored."""
    return _review({"uid": uid, "allowed": False,
                    "status": {"metadata": {}, "code": code, "message": message}})
