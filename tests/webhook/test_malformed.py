"""Reviews that cannot be read are denied with a status code and a reason (as
controller-runtime answers them), and the server keeps serving."""

from __future__ import annotations

import json

import aiohttp
import pytest

from tests.webhook.conftest import Running
from tests.webhook.test_admission import container, pod, res, review

GOOD = review(pod([container("c", res({"cpu": "1"}))]), uid="good")


async def assert_still_serving(webhook: Running) -> None:
    status, body = await webhook.post(GOOD)
    assert status == 200 and body["response"]["allowed"] is True
    assert body["response"]["uid"] == "good" and "patch" in body["response"]


def bad_pod(change: str) -> bytes:
    obj = pod([container("c", res({"cpu": "1"}))])
    if change == "quantity":
        obj["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "two"
    elif change == "quantity-type":
        obj["spec"]["containers"][0]["resources"]["requests"]["cpu"] = {"v": 1}
    elif change == "containers":
        obj["spec"]["containers"] = {"c": {}}
    elif change == "resources":
        obj["spec"]["containers"][0]["resources"] = ["cpu"]
    elif change == "object":
        return review(["not", "a", "pod"], uid="bad")
    return review(obj, uid="bad")


@pytest.mark.parametrize(("body", "content_type", "message"), [
    (b"", "application/json", "request body is empty"),
    (b"{", "application/json", "couldn't decode the AdmissionReview"),
    (b"\xff\xfe", "application/json", "couldn't decode the AdmissionReview"),
    (b"[1, 2]", "application/json", "not a JSON object"),
    (b"[" * 100000, "application/json", "couldn't decode the AdmissionReview"),
    (GOOD, "text/plain", "contentType=text/plain, expected application/json"),
    (json.dumps({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview",
                 "request": {"uid": "x"}}).encode(), "application/json", "unsupported review"),
    (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).encode(),
     "application/json", "got an empty AdmissionRequest"),
    (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                 "request": {"object": {}}}).encode(), "application/json", "has no uid"),
], ids=["empty", "truncated", "not-utf8", "array", "deep", "content-type", "v1beta1",
        "no-request", "no-uid"])
async def test_unreadable_reviews_are_denied_with_400(
        webhook: Running, body: bytes, content_type: str, message: str) -> None:
    status, answer = await webhook.post(body, content_type)
    assert status == 200
    assert answer["apiVersion"] == "admission.k8s.io/v1"
    response = answer["response"]
    assert response["allowed"] is False and response["uid"] == ""
    assert response["status"]["code"] == 400
    assert message in response["status"]["message"]
    await assert_still_serving(webhook)


@pytest.mark.parametrize(("change", "message"), [
    ("quantity", "spec.containers[0].resources.requests[cpu]: quantity 'two'"),
    ("quantity-type", "is not a string or a number"),
    ("containers", "spec.containers is not a list of containers"),
    ("resources", "spec.containers[0].resources is not an object"),
    ("object", "the admitted object is not a JSON object"),
])
async def test_unreadable_pods_are_denied_with_400(webhook: Running, change: str,
                                                   message: str) -> None:
    status, answer = await webhook.post(bad_pod(change))
    assert status == 200
    response = answer["response"]
    assert response["uid"] == "bad" and response["allowed"] is False
    assert response["status"]["code"] == 400
    assert message in response["status"]["message"], response["status"]["message"]
    await assert_still_serving(webhook)


async def test_oversized_review_is_denied_with_413(webhook: Running) -> None:
    status, answer = await webhook.post(b" " * (7 * 1024 * 1024 + 10))
    assert status == 200
    assert answer["response"]["allowed"] is False
    assert answer["response"]["status"]["code"] == 413
    await assert_still_serving(webhook)


async def test_other_methods_and_paths(webhook: Running) -> None:
    async with webhook.session.get(webhook.url) as response:
        assert response.status == 405
    async with webhook.session.post(webhook.url.replace("mutate-v1-pod", "validate"),
                                    data=GOOD) as response:
        assert response.status == 404
    await assert_still_serving(webhook)


async def test_plain_http_is_refused(webhook: Running) -> None:
    url = f"http://127.0.0.1:{webhook.server.webhook_port}/mutate-v1-pod"
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            async with session.post(url, data=GOOD) as response:
                await response.read()
    await assert_still_serving(webhook)
