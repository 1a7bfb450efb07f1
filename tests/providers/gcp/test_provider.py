"""The GCP provider's own behaviour, the real SDK against the loopback Compute endpoint:
what each setting puts in the insert body, addresses, labels, retries and refusals."""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import pytest

from providers.base import (
    NODE_TAG,
    SANDBOX_TAG,
    ConfigError,
    InstanceSpec,
    InvalidSpec,
    ProviderError,
    QuotaExceeded,
    Throttled,
)
from providers.gcp.body import label_value, request_id
from tests.providers.gcp.computeserver import ComputeServer
from tests.providers.gcp.conftest import PROJECT, USER_DATA, ZONE, ProviderFactory, make_request

ZONE_PATH = f"/compute/v1/projects/{PROJECT}/zones/{ZONE}"


def inserted(compute: ComputeServer) -> dict[str, Any]:
    [call] = compute.calls("POST", "/instances")
    assert isinstance(call.body, dict)
    return call.body


@pytest.mark.parametrize(("kind", "machine", "disk"), [
    ("TDX", "c3-standard-4", "pd-balanced"),
    ("SEV", "n2d-standard-2", "pd-standard"),
    ("SEV_SNP", "n2d-standard-4", "pd-standard"),
])
async def test_each_confidential_type(
    make_provider: ProviderFactory, compute: ComputeServer, node: str,
    kind: str, machine: str, disk: str,
) -> None:
    provider = make_provider(confidential_type=kind, machine_type=machine, disk_type=disk)
    await provider.verify_config()
    instance = await provider.create_instance(make_request(node))
    body = inserted(compute)
    assert body["confidentialInstanceConfig"] == {
        "confidentialInstanceType": kind, "enableConfidentialCompute": True}
    assert body["scheduling"] == {"onHostMaintenance": "TERMINATE"}
    assert body["machineType"] == f"zones/{ZONE}/machineTypes/{machine}"
    assert body["disks"][0]["initializeParams"]["diskType"] == f"zones/{ZONE}/diskTypes/{disk}"
    assert compute.instances[instance.name]["status"] == "RUNNING"


async def test_tdx_with_upstreams_default_disk_type_is_refused_clearly(
    make_provider: ProviderFactory, compute: ComputeServer, node: str
) -> None:
    provider = make_provider(confidential_type="TDX", machine_type="c3-standard-4")
    with pytest.raises(ConfigError, match="pd-standard is refused on the c3"):
        await provider.verify_config()
    with pytest.raises(InvalidSpec, match=r"\[pd-standard\] features are not compatible"):
        await provider.create_instance(make_request(node))
    assert compute.instances == {}


async def test_cvm_without_a_confidential_type_is_a_config_error(
    make_provider: ProviderFactory, compute: ComputeServer, node: str
) -> None:
    provider = make_provider(confidential_type="")
    with pytest.raises(ConfigError, match="GCP_CONFIDENTIAL_TYPE"):
        await provider.verify_config()
    with pytest.raises(ConfigError, match="ConfidentialType must be set"):
        await provider.create_instance(make_request(node))
    assert compute.calls("POST") == []


async def test_non_cvm(make_provider: ProviderFactory, compute: ComputeServer, node: str) -> None:
    provider = make_provider(disable_cvm=True, confidential_type="", machine_type="e2-medium")
    await provider.verify_config()
    await provider.create_instance(make_request(node))
    body = inserted(compute)
    assert "confidentialInstanceConfig" not in body
    assert "scheduling" not in body


async def test_gpus_terminate_on_host_maintenance(
    make_provider: ProviderFactory, compute: ComputeServer, node: str
) -> None:
    provider = make_provider(disable_cvm=True, confidential_type="",
                             machine_types=("e2-medium", "g2-standard-4", "a2-highgpu-2g"))
    catalogue = await provider.instance_types()
    assert [(t.name, t.vcpus, t.memory_mib, t.gpus) for t in catalogue.specs] == [
        ("e2-medium", 2, 4096, 0), ("g2-standard-4", 4, 16384, 1),
        ("a2-highgpu-2g", 24, 174080, 2)]
    spec = InstanceSpec(instance_type="g2-standard-4", gpus=1)
    await provider.create_instance(make_request(node, spec=spec))
    body = inserted(compute)
    assert body["scheduling"] == {"onHostMaintenance": "TERMINATE"}
    assert "confidentialInstanceConfig" not in body
    assert body["machineType"] == f"zones/{ZONE}/machineTypes/g2-standard-4"


async def test_unknown_machine_type_in_the_allow_list_is_a_config_error(
    make_provider: ProviderFactory,
) -> None:
    provider = make_provider(machine_types=("n2d-standard-2", "n9-imaginary-8"))
    with pytest.raises(ConfigError, match="machine type n9-imaginary-8 not found"):
        await provider.instance_types()


async def test_private_address_without_public_ip(
    make_provider: ProviderFactory, compute: ComputeServer, node: str
) -> None:
    instance = await make_provider().create_instance(make_request(node))
    nic = inserted(compute)["networkInterfaces"][0]
    assert nic == {"network": "default", "stackType": "IPV4_ONLY"}
    stored = compute.instances[instance.name]["networkInterfaces"][0]
    assert [str(ip) for ip in instance.ips] == [stored["networkIP"]]


async def test_public_ip(make_provider: ProviderFactory, compute: ComputeServer, node: str) -> None:
    provider = make_provider(use_public_ip=True)
    instance = await provider.create_instance(make_request(node))
    nic = inserted(compute)["networkInterfaces"][0]
    assert nic["accessConfigs"] == [
        {"name": "External NAT", "networkTier": "STANDARD", "type": "ONE_TO_ONE_NAT"}]
    stored = compute.instances[instance.name]["networkInterfaces"][0]
    nat = stored["accessConfigs"][0]["natIP"]
    assert nat.startswith("198.51.100.")
    assert [str(ip) for ip in instance.ips] == [nat]
    [listed] = await provider.list_instances({SANDBOX_TAG: instance.tags[SANDBOX_TAG]})
    assert [str(ip) for ip in listed.ips] == [nat]


@pytest.mark.parametrize(("image", "source", "size"), [
    ("podvm-image", f"projects/{PROJECT}/global/images/podvm-image", "12"),
    (f"projects/{PROJECT}/global/images/podvm-big", f"projects/{PROJECT}/global/images/podvm-big",
     "30"),
    (f"/projects/{PROJECT}/global/images/podvm-big",
     f"/projects/{PROJECT}/global/images/podvm-big", "30"),
    (f"https://www.googleapis.com/compute/v1/projects/{PROJECT}/global/images/podvm-image",
     f"https://www.googleapis.com/compute/v1/projects/{PROJECT}/global/images/podvm-image", "12"),
    (f"projects/{PROJECT}/global/images/family/podvm",
     f"projects/{PROJECT}/global/images/family/podvm", "12"),
])
async def test_image_name_expansion_and_disk_size(
    make_provider: ProviderFactory, compute: ComputeServer, node: str,
    image: str, source: str, size: str,
) -> None:
    await make_provider(image_name=image).create_instance(make_request(node))
    disk = inserted(compute)["disks"][0]
    assert disk["initializeParams"]["sourceImage"] == source
    assert disk["initializeParams"]["diskSizeGb"] == size  # int64 as a JSON string
    assert (disk["boot"], disk["autoDelete"], disk["type"]) == (True, True, "PERSISTENT")


async def test_root_volume_size_above_the_image_and_annotation_image(
    make_provider: ProviderFactory, compute: ComputeServer, node: str
) -> None:
    provider = make_provider(root_volume_size=50)
    await provider.create_instance(make_request(node, spec=InstanceSpec(image="podvm-big")))
    init = inserted(compute)["disks"][0]["initializeParams"]
    assert init["sourceImage"] == f"projects/{PROJECT}/global/images/podvm-big"
    assert init["diskSizeGb"] == "50"


async def test_unknown_image_is_refused(
    make_provider: ProviderFactory, compute: ComputeServer, node: str
) -> None:
    provider = make_provider(image_name="no-such-image")
    with pytest.raises(ConfigError, match="no-such-image"):
        await provider.verify_config()
    with pytest.raises(InvalidSpec, match="no-such-image"):
        await provider.create_instance(make_request(node))
    assert compute.calls("POST") == []


@pytest.mark.parametrize(("subnetwork", "sent"), [
    ("pods-subnet", f"projects/{PROJECT}/regions/us-central1/subnetworks/pods-subnet"),
    ("regions/us-central1/subnetworks/pods-subnet", "regions/us-central1/subnetworks/pods-subnet"),
    (f"projects/{PROJECT}/regions/us-central1/subnetworks/pods-subnet",
     f"projects/{PROJECT}/regions/us-central1/subnetworks/pods-subnet"),
])
async def test_subnetwork_expansion(
    make_provider: ProviderFactory, compute: ComputeServer, node: str, subnetwork: str, sent: str
) -> None:
    provider = make_provider(subnetwork=subnetwork, network="pods")
    await provider.verify_config()
    await provider.create_instance(make_request(node))
    assert inserted(compute)["networkInterfaces"][0]["subnetwork"] == sent


async def test_missing_subnetwork_and_network_fail_verify(make_provider: ProviderFactory) -> None:
    with pytest.raises(ConfigError, match=r"subnetwork .*no-subnet not found"):
        await make_provider(subnetwork="no-subnet").verify_config()
    with pytest.raises(ConfigError, match="network nope not found"):
        await make_provider(network="nope").verify_config()
    with pytest.raises(ConfigError, match="project other-project not found"):
        await make_provider(project_id="other-project").verify_config()


async def test_labels_metadata_and_user_data(
    make_provider: ProviderFactory, compute: ComputeServer, node: str
) -> None:
    request = make_request(node)
    instance = await make_provider().create_instance(request)
    body = inserted(compute)
    labels = body["labels"]
    assert labels == {
        "peerpods-node": node, "peerpods-pod-name": "nginx",
        "peerpods-pod-namespace": "default",
        "peerpods-sandbox": label_value(request.sandbox_id),
    }
    assert all(len(v) <= 63 and v == v.lower() for v in labels.values())
    assert labels["peerpods-sandbox"] != request.sandbox_id  # 64 characters do not fit
    items = {i["key"]: i["value"] for i in body["metadata"]["items"]}
    assert base64.b64decode(items["user-data"]) == USER_DATA
    assert items["user-data-encoding"] == "base64"
    assert json.loads(items["peerpods-tags"]) == dict(request.tags)
    assert instance.tags == dict(request.tags)  # the exact values come back
    assert instance.id == compute.instances[request.name]["id"]
    assert instance.name == request.name


async def test_list_filters_by_labels_and_pages(
    make_provider: ProviderFactory, compute: ComputeServer, node: str
) -> None:
    compute.page_limit = 2
    provider = make_provider()
    made = {(await provider.create_instance(make_request(node, pod=f"p{n}"))).id
            for n in range(5)}
    found = await provider.list_instances({NODE_TAG: node})
    assert {i.id for i in found} == made
    lists = [c for c in compute.calls("GET", "/instances") if c.query.get("pageToken")]
    assert len(lists) == 2  # 5 instances, 2 a page
    assert all(c.query["filter"] == f'labels.peerpods-node="{node}"' for c in lists)


async def test_delete_twice(make_provider: ProviderFactory, compute: ComputeServer, node: str
                            ) -> None:
    provider = make_provider()
    instance = await provider.create_instance(make_request(node))
    await provider.delete_instance(instance.id)
    await provider.delete_instance(instance.id)
    deletes = compute.calls("DELETE")
    assert [c.path for c in deletes] == [f"{ZONE_PATH}/instances/{instance.id}"] * 2
    assert instance.name not in compute.instances


async def test_operations_are_waited_until_done(
    make_provider: ProviderFactory, compute: ComputeServer, node: str
) -> None:
    compute.insert_polls = 5
    instance = await make_provider().create_instance(make_request(node))
    waits = compute.calls("POST", "/wait")
    assert len(waits) == 6  # /wait answered RUNNING five times before DONE
    assert compute.instances[instance.name]["status"] == "RUNNING"


@pytest.mark.parametrize(("action", "status", "reason"), [
    ("insert", 429, "rateLimitExceeded"),
    ("insert", 403, "rateLimitExceeded"),
    ("wait", 403, "userRateLimitExceeded"),
    ("list", 429, "rateLimitExceeded"),
    ("get", 403, "rateLimitExceeded"),
])
async def test_throttling_is_retried(
    make_provider: ProviderFactory, compute: ComputeServer, node: str,
    action: str, status: int, reason: str,
) -> None:
    compute.faults.queue(action, status, reason, times=3)
    request = make_request(node)
    instance = await make_provider().create_instance(request)
    assert compute.faults.http[action] == []  # all three were answered, then retried
    assert list(compute.instances) == [request.name]
    assert instance.ips
    inserts = compute.calls("POST", "/instances")
    assert {c.query["requestId"] for c in inserts} == {request_id(request.sandbox_id, 0)}


async def test_insert_retried_after_a_lost_answer_makes_one_instance(
    make_provider: ProviderFactory, compute: ComputeServer, node: str
) -> None:
    compute.faults.lose_insert_answers = 2
    request = make_request(node)
    instance = await make_provider().create_instance(request)
    inserts = compute.calls("POST", "/instances")
    assert len(inserts) == 3
    assert {c.query["requestId"] for c in inserts} == {request_id(request.sandbox_id, 0)}
    assert list(compute.instances) == [request.name]
    assert instance.id == compute.instances[request.name]["id"]


async def test_a_stopping_instance_of_the_sandbox_is_not_handed_out(
    make_provider: ProviderFactory, compute: ComputeServer, node: str
) -> None:
    provider = make_provider()
    request = make_request(node)
    await provider.create_instance(request)
    compute.instances[request.name]["status"] = "STOPPING"
    with pytest.raises(ProviderError, match="is STOPPING"):
        await provider.create_instance(request)
    retry = make_request(node, sandbox_id=request.sandbox_id, attempt=1)
    with pytest.raises(ProviderError, match="already exists"):  # the name is still taken
        await provider.create_instance(retry)


async def test_throttled_past_the_timeout(
    make_provider: ProviderFactory, compute: ComputeServer, node: str
) -> None:
    from datetime import timedelta

    compute.faults.queue("list", 429, "rateLimitExceeded", times=10_000)
    provider = make_provider(api_timeout=timedelta(seconds=1))
    with pytest.raises(Throttled, match="still rate limited"):
        await provider.list_instances({NODE_TAG: node})


async def test_zone_pool_exhausted(
    make_provider: ProviderFactory, compute: ComputeServer, node: str
) -> None:
    compute.faults.exhaust_next_insert = True
    with pytest.raises(QuotaExceeded, match=r"no capacity for machine type n2d-standard-2.*"
                       r"ZONE_RESOURCE_POOL_EXHAUSTED"):
        await make_provider().create_instance(make_request(node))
    assert compute.instances == {}
    assert len(compute.calls("POST", "/instances")) == 1  # not retried


async def test_quota_exceeded_on_insert(
    make_provider: ProviderFactory, compute: ComputeServer, node: str
) -> None:
    compute.faults.queue("insert", 403, "quotaExceeded")
    with pytest.raises(QuotaExceeded, match="quota exceeded"):
        await make_provider().create_instance(make_request(node))
    assert compute.instances == {}


async def test_resource_manager_tags(
    make_provider: ProviderFactory, compute: ComputeServer, node: str
) -> None:
    compute.catalogue.resource_tags = {f"{PROJECT}/env": {"prod"}, "tagKeys/123": {"tagValues/9"}}
    provider = make_provider(tags={"env": "prod", "tagKeys/123": "tagValues/9"})
    await provider.create_instance(make_request(node))
    assert inserted(compute)["params"] == {
        "resourceManagerTags": {f"{PROJECT}/env": "prod", "tagKeys/123": "tagValues/9"}}
    unknown = make_provider(tags={"env": "staging"})
    with pytest.raises(InvalidSpec, match=f"{PROJECT}/env=staging does not exist"):
        await unknown.create_instance(make_request(node))
    assert len(compute.instances) == 1


async def test_credentials_are_never_sent_over_http_nor_shown(
    make_provider: ProviderFactory, node: str
) -> None:
    key = json.dumps({"type": "service_account", "private_key": "-----SECRET-KEY-----"})
    provider = make_provider(credentials=key)
    with pytest.raises(ConfigError, match="plain http") as caught:
        await provider.list_instances({NODE_TAG: node})
    assert "SECRET-KEY" not in str(caught.value)
    broken = make_provider(credentials="{not json SECRET", api_endpoint="https://127.0.0.1:9")
    with pytest.raises(ConfigError, match="not valid JSON") as caught:
        await broken.list_instances({NODE_TAG: node})
    assert "SECRET" not in str(caught.value)
    unusable = make_provider(credentials=key, api_endpoint="https://127.0.0.1:9")
    with pytest.raises(ConfigError, match="not a usable service account key") as caught:
        await unusable.list_instances({NODE_TAG: node})
    assert "SECRET-KEY" not in str(caught.value)


async def test_sdk_debug_logs_carry_no_bodies(
    make_provider: ProviderFactory, node: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The SDK logs request and response bodies (user-data included) as extras at DEBUG.
    It keeps them from the root logger unless its "google" logger is configured (as
    GOOGLE_SDK_PYTHON_LOGGING_SCOPE does): this test lets them through to see."""
    caplog.set_level(logging.DEBUG)
    provider = make_provider()
    await provider.list_instances({NODE_TAG: node})  # the SDK sets its logging up
    google = logging.getLogger("google")
    saved = google.propagate
    google.propagate = True
    try:
        instance = await provider.create_instance(make_request(node))
        await provider.list_instances({NODE_TAG: node})
        await provider.delete_instance(instance.id)
    finally:
        google.propagate = saved
    encoded = base64.b64encode(USER_DATA).decode()
    assert any(r.name.startswith("providers.gcp") for r in caplog.records)
    # Without the provider's cap, the insert's "Sending request" record carries the body.
    assert logging.getLogger("google.cloud.compute_v1").getEffectiveLevel() >= logging.INFO
    for record in caplog.records:
        assert encoded not in str(record.__dict__), record.name
        assert not hasattr(record, "httpRequest") and not hasattr(record, "httpResponse")
