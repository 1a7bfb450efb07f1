"""The provider kit: worker threads, the error table, SDK calls with retries, tags, spec."""

from __future__ import annotations

import threading

import pytest

from providers.base import (
    NODE_TAG,
    POD_NAME_TAG,
    SANDBOX_TAG,
    InstanceNotFound,
    InstanceRequest,
    InstanceSpec,
    InstanceState,
    InvalidSpec,
    ProviderError,
    ProviderUnavailable,
    QuotaExceeded,
    Throttled,
)
from providers.kit import (
    BlockingCalls,
    ErrorTable,
    SdkCaller,
    TagMap,
    instance_tags,
    label_key,
    matches,
    refuse_unsupported,
    state_of,
    translate_errors,
)
from providers.ratelimit import Backoff, RateLimitTimeout


class SdkError(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(f"sdk says {code}")
        self.code = code


class SdkTimeout(SdkError):
    pass


TABLE = ErrorTable([
    (SdkTimeout, ProviderUnavailable),
    (lambda exc: getattr(exc, "code", "") == "NotFound",
     lambda exc, context: InstanceNotFound(context)),
    (lambda exc: getattr(exc, "code", "") == "Quota", QuotaExceeded),
])


def test_error_table_first_matching_rule_wins() -> None:
    error = TABLE.translate(SdkTimeout("NotFound"), "GetVm")
    assert type(error) is ProviderUnavailable and str(error) == "GetVm: sdk says NotFound"
    error = TABLE.translate(SdkError("NotFound"), "vm-1")
    assert isinstance(error, InstanceNotFound) and error.instance_id == "vm-1"
    assert type(TABLE.translate(SdkError("Quota"), "Run")) is QuotaExceeded
    other = TABLE.translate(SdkError("Odd"), "Run")
    assert type(other) is ProviderError and str(other) == "Run: sdk says Odd"


def test_translate_errors_lets_provider_errors_through() -> None:
    original = InvalidSpec("bad")
    with pytest.raises(InvalidSpec) as info, translate_errors(TABLE("Run")):
        raise original
    assert info.value is original
    with pytest.raises(QuotaExceeded) as caught, translate_errors(TABLE("Run")):
        raise SdkError("Quota")
    assert isinstance(caught.value.__cause__, SdkError)
    with pytest.raises(Throttled, match="Run: client-side rate limit"), \
            translate_errors(TABLE("Run")):
        raise RateLimitTimeout("a token is 3s away")


def test_translate_errors_only_catches_what_it_is_told() -> None:
    with pytest.raises(KeyError), translate_errors(TABLE("Run"), catch=(SdkError,)):
        raise KeyError("not an SDK error")


async def test_sdk_caller_retries_on_its_threads_then_translates() -> None:
    threads = BlockingCalls(2, "kit-test")
    seen: list[str] = []
    outcomes: list[Exception | str] = [SdkTimeout("Busy"), SdkTimeout("Busy"), "done"]

    def call(arg: str) -> str:
        seen.append(threading.current_thread().name)
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return f"{outcome} {arg}"

    def classify(exc: Exception) -> Backoff | None:
        return Backoff(base=0.001, cap=0.001, max_attempts=5) if isinstance(
            exc, SdkTimeout) else None

    caller = SdkCaller(threads, classify, timeout=10)
    assert await caller.call(call, "x", translate=TABLE("Call")) == "done x"
    assert len(seen) == 3 and all(name.startswith("kit-test") for name in seen)

    outcomes[:] = [SdkError("Quota")]
    with pytest.raises(QuotaExceeded, match="Call: sdk says Quota"):
        await caller.call(call, "y", translate=TABLE("Call"))
    threads.close()
    threads.close()


def test_tag_map_round_trips_logical_keys() -> None:
    tags = {NODE_TAG: "n1", SANDBOX_TAG: "s1", POD_NAME_TAG: "Web", "team": "x"}
    labels = TagMap(key=label_key)
    out = labels.to_cloud(tags)
    assert set(out) == {"peerpods-node", "peerpods-sandbox", "peerpods-pod-name", "team"}
    odd = TagMap(key=lambda key: key.replace("-", "_"))
    stored = odd.to_cloud(tags)
    assert "peerpods_node" in stored and NODE_TAG not in stored
    assert odd.from_cloud(stored, tags) == tags


def test_label_key_is_label_safe() -> None:
    assert label_key("Peerpods.Node/Name") == "peerpods_node_name"
    assert label_key("9lives") == "k9lives"
    assert len(label_key("a" * 100)) == 63


def test_instance_tags_merge_order_and_matches() -> None:
    request = InstanceRequest(
        name="podvm-web-1", sandbox_id="s1", pod_name="web", pod_namespace="default",
        user_data=b"", tags={NODE_TAG: "n1", SANDBOX_TAG: "wrong", "team": "req"},
    )
    tags = instance_tags(request, defaults={"team": "settings", "env": "test"},
                         name_tag="Name")
    assert tags == {"team": "req", "env": "test", NODE_TAG: "n1", SANDBOX_TAG: "s1",
                    "Name": "podvm-web-1"}
    assert matches(tags, {NODE_TAG: "n1", "env": "test"})
    assert not matches(tags, {NODE_TAG: "n1", "env": "prod"})
    assert matches(tags, {})


def test_state_table() -> None:
    table = {"up": InstanceState.RUNNING}
    assert state_of("up", table) is InstanceState.RUNNING
    assert state_of("weird", table) is InstanceState.UNKNOWN
    assert InstanceState.RUNNING == "running"


def test_refuse_unsupported_names_every_refused_field() -> None:
    refuse_unsupported(InstanceSpec(), "x", ())
    refuse_unsupported(InstanceSpec(vcpus=2, image="img"), "x", ("vcpus", "image"))
    with pytest.raises(InvalidSpec) as info:
        refuse_unsupported(InstanceSpec(vcpus=2, gpus=1, multi_nic=True), "x", ("vcpus",),
                           why="no accelerators")
    assert str(info.value) == (
        "the x provider cannot honour gpus=1, multi_nic=True (no accelerators)"
    )
    with pytest.raises(ValueError, match="gpu"):
        refuse_unsupported(InstanceSpec(), "x", ("gpu",))
