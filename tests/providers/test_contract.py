"""The Provider contract of ``providers/base.py``, one suite run against every provider.

The providers and their peers are in :mod:`tests.providers.contract` (``FACTORIES``); a new
provider adds one factory there and gets every test below.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from providers.base import (
    NODE_TAG,
    POD_NAME_TAG,
    POD_NAMESPACE_TAG,
    SANDBOX_TAG,
    ConfigError,
    Instance,
    InstanceRequest,
    InstanceSpec,
    InstanceState,
    InvalidSpec,
    Provider,
    adaptor_tags,
)
from tests.providers.aws.conftest import ec2, moto, proxy, world  # noqa: F401  (fixtures)
from tests.providers.azure.conftest import arm  # noqa: F401  (fixture)
from tests.providers.contract import FACTORIES, Subject, cloud_api  # noqa: F401  (fixture)
from tests.providers.libvirt.conftest import env  # noqa: F401  (fixture)
from tests.providers.local.conftest import agent_tls, state_dir  # noqa: F401  (fixtures)

LIVE = (InstanceState.PENDING, InstanceState.RUNNING)


@pytest.fixture
def node() -> str:
    return f"node-{uuid.uuid4().hex[:10]}"


@pytest.fixture(params=[pytest.param(name, marks=marks) for name, (_f, marks) in
                        FACTORIES.items()])
def subject(request: pytest.FixtureRequest, node: str) -> Subject:
    factory, _marks = FACTORIES[request.param]
    return factory(request, node)


@pytest.fixture
async def provider(subject: Subject, node: str) -> AsyncIterator[Provider]:
    """The provider under test; afterwards every instance of the test's node is deleted
    (by a provider of its own, as the one under test may be closed) and all are closed."""
    made = subject.make()
    subject.made.append(made)
    yield made
    cleaner = subject.make()
    try:
        for instance in await cleaner.list_instances({NODE_TAG: node}):
            await cleaner.delete_instance(instance.id)
    finally:
        await cleaner.aclose()
        for provider in subject.made:
            await provider.aclose()


def make_request(
    subject: Subject, node: str, *, sandbox_id: str | None = None, pod: str = "web",
    namespace: str = "default", attempt: int = 0, spec: InstanceSpec | None = None,
) -> InstanceRequest:
    sid = sandbox_id or uuid.uuid4().hex + uuid.uuid4().hex
    name = f"podvm-{pod}-{sid[:8]}"
    return InstanceRequest(
        name=name, sandbox_id=sid, pod_name=pod, pod_namespace=namespace,
        user_data=subject.user_data(name), spec=spec or InstanceSpec(),
        tags=adaptor_tags(node, sid, pod, namespace), attempt=attempt,
    )


async def ids(provider: Provider, **tags: str) -> set[str]:
    return {i.id for i in await provider.list_instances(tags)}


async def of_sandbox(provider: Provider, sid: str) -> set[str]:
    return await ids(provider, **{SANDBOX_TAG: sid})


def assert_booting(instance: Instance, request: InstanceRequest) -> None:
    assert instance.ips, "a created instance has addresses"
    assert instance.state in LIVE
    assert {k: instance.tags.get(k) for k in request.tags} == dict(request.tags)


async def test_create_list_delete(subject: Subject, provider: Provider, node: str) -> None:
    request = make_request(subject, node)
    instance = await provider.create_instance(request)
    assert_booting(instance, request)
    assert instance.name == request.name
    listed = await provider.list_instances({SANDBOX_TAG: request.sandbox_id})
    assert [(i.id, i.name) for i in listed] == [(instance.id, request.name)]
    assert listed[0].state in LIVE
    await provider.delete_instance(instance.id)
    assert await of_sandbox(provider, request.sandbox_id) == set()


async def test_delete_twice(subject: Subject, provider: Provider, node: str) -> None:
    instance = await provider.create_instance(make_request(subject, node))
    await provider.delete_instance(instance.id)
    await provider.delete_instance(instance.id)
    assert instance.id not in await ids(provider, **{NODE_TAG: node})


async def test_delete_of_an_unknown_id_succeeds(subject: Subject, provider: Provider) -> None:
    await provider.delete_instance(subject.unknown_id)


async def test_same_sandbox_twice_gives_the_same_instance(
    subject: Subject, provider: Provider, node: str
) -> None:
    request = make_request(subject, node)
    first = await provider.create_instance(request)
    second = await provider.create_instance(request)
    assert second.id == first.id
    assert second.ips == first.ips
    assert await of_sandbox(provider, request.sandbox_id) == {first.id}


async def test_create_after_delete_makes_a_new_instance(
    subject: Subject, provider: Provider, node: str
) -> None:
    request = make_request(subject, node)
    first = await provider.create_instance(request)
    await provider.delete_instance(first.id)
    again = make_request(subject, node, sandbox_id=request.sandbox_id, attempt=1)
    second = await provider.create_instance(again)
    assert second.id != first.id
    assert_booting(second, again)
    assert await of_sandbox(provider, request.sandbox_id) == {second.id}


async def test_tags_round_trip_with_the_logical_keys(
    subject: Subject, provider: Provider, node: str
) -> None:
    request = make_request(subject, node, pod="tag-pod", namespace="tag-ns")
    created = await provider.create_instance(request)
    [listed] = await provider.list_instances({NODE_TAG: node})
    expected = {NODE_TAG: node, SANDBOX_TAG: request.sandbox_id,
                POD_NAME_TAG: "tag-pod", POD_NAMESPACE_TAG: "tag-ns"}
    for instance in (created, listed):
        assert instance.id == created.id
        assert {k: instance.tags.get(k) for k in expected} == expected


async def test_list_filters_by_every_given_tag(
    subject: Subject, provider: Provider, node: str
) -> None:
    a = make_request(subject, node, pod="web", namespace="default")
    b = make_request(subject, node, pod="db", namespace="other")
    made = {"a": await provider.create_instance(a), "b": await provider.create_instance(b)}
    ours = {made["a"].id: "a", made["b"].id: "b"}

    async def found(**tags: str) -> set[str]:
        return {ours[i] for i in await ids(provider, **tags) if i in ours}

    for key in (NODE_TAG, SANDBOX_TAG, POD_NAME_TAG, POD_NAMESPACE_TAG):
        expected = {"a"} | ({"b"} if b.tags[key] == a.tags[key] else set())
        assert await found(**{key: a.tags[key]}) == expected, key
    assert await found(**{NODE_TAG: node, POD_NAME_TAG: "db"}) == {"b"}
    assert await found(**{POD_NAME_TAG: "web", POD_NAMESPACE_TAG: "default"}) == {"a"}
    assert await found(**{POD_NAME_TAG: "web", POD_NAMESPACE_TAG: "other"}) == set()
    assert await found(**{NODE_TAG: "another-node", SANDBOX_TAG: a.sandbox_id}) == set()
    assert await found(**a.tags) == {"a"}


async def test_cancelled_create_leaves_nothing_after_the_adaptor_cleans_up(
    subject: Subject, provider: Provider, node: str
) -> None:
    """The adaptor's side of the cancellation contract (Provider.create_instance): it runs the
    create in a task of its own and shields it; its caller is cancelled mid-create; it then
    awaits that task and deletes the instance it returns.

    Asserted: the caller sees CancelledError while the create is still running; the create
    itself completes with a booting instance; after the delete, ``list_instances`` finds
    nothing for the sandbox and the cloud holds nothing more for the instance name
    (``Subject.residue``: volumes, directories, raw EC2 instances).
    """
    subject.slow_create()
    request = make_request(subject, node)
    create = asyncio.ensure_future(provider.create_instance(request))

    async def caller() -> Instance:
        return await asyncio.shield(create)

    waiting = asyncio.create_task(caller())
    await asyncio.sleep(0)  # both tasks start; the create is now under way
    assert not create.done()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert not create.done()

    instance = await create  # the adaptor's reaper
    assert_booting(instance, request)
    await provider.delete_instance(instance.id)
    assert await of_sandbox(provider, request.sandbox_id) == set()
    assert await subject.residue(request.name) == set()


async def test_unsupported_spec_is_refused(
    subject: Subject, provider: Provider, node: str
) -> None:
    request = make_request(subject, node, spec=subject.unsupported)
    with pytest.raises(InvalidSpec, match=subject.unsupported_field):
        await provider.create_instance(request)
    assert await of_sandbox(provider, request.sandbox_id) == set()
    assert await subject.residue(request.name) == set()


async def test_volumes_attached_or_refused(
    subject: Subject, provider: Provider, node: str
) -> None:
    """CSI block volumes: a provider that can attach them attaches every one, in order, and
    its delete leaves them intact and free; any other refuses them before making anything."""
    kit = subject.volumes
    if kit is None:
        request = make_request(subject, node, spec=InstanceSpec(
            volumes=("vol-0123456789abcdef0",)))
        with pytest.raises(InvalidSpec, match="volumes"):
            await provider.create_instance(request)
        assert await of_sandbox(provider, request.sandbox_id) == set()
        assert await subject.residue(request.name) == set()
        return
    disks = await kit.make(2)
    request = make_request(subject, node, spec=InstanceSpec(volumes=disks))
    instance = await provider.create_instance(request)
    assert await kit.attached(instance.id) == list(disks)
    await provider.delete_instance(instance.id)
    assert await of_sandbox(provider, request.sandbox_id) == set()
    assert await kit.free(disks)


async def test_verify_config_good_and_bad(subject: Subject, provider: Provider) -> None:
    await provider.verify_config()
    bad = subject.make_bad()
    subject.made.append(bad)
    with pytest.raises(ConfigError):
        await bad.verify_config()


async def test_instance_types_stay_within_the_allow_list(
    subject: Subject, provider: Provider, node: str
) -> None:
    catalogue = await provider.instance_types()
    if catalogue is not None:
        allowed = set(catalogue.allowed) or {catalogue.default}
        assert {spec.name for spec in catalogue.specs} <= allowed
    assert await ids(provider, **{NODE_TAG: node}) == set()


async def test_aclose_twice(subject: Subject, provider: Provider, node: str) -> None:
    await provider.list_instances({NODE_TAG: node})  # clients and threads in use
    await provider.aclose()
    await provider.aclose()


async def test_satisfies_the_protocol(subject: Subject, provider: Provider) -> None:
    assert isinstance(provider, Provider)
