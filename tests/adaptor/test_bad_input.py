"""Bad requests get a clear ttrpc error, lose nothing, and the daemon keeps serving."""

from __future__ import annotations

import pytest

from adaptor.server import Daemon, StartupError, prepare
from protocols import initdata
from protocols.ttrpc import Code
from providers.base import InstanceTypeCatalogue, InstanceTypeInfo
from tests.adaptor.conftest import FAST_RETRY, make_settings
from tests.adaptor.helpers import expect_error
from tests.adaptor.shim import POD_NAME, POD_NAMESPACE, Shim, shim_annotations
from tests.fakes.cloud import FakeCloud
from tests.fakes.network import FakeWorkerNetwork


async def still_serving(shim: Shim, cloud: FakeCloud, sid: str) -> None:
    assert await shim.version() == "0.0.0"
    await shim.create_vm(sid)
    await shim.start_vm(sid)
    await shim.stop_vm(sid)
    assert cloud.provider.instances == {}


async def test_create_vm_validation(
    daemon: Daemon, cloud: FakeCloud, shim: Shim, network: FakeWorkerNetwork
) -> None:
    cases: list[tuple[str, dict[str, str], str]] = [
        ("", shim_annotations(), "empty sandbox id"),
        ("sb-1", {**shim_annotations(), POD_NAME: ""},
         "pod name io.kubernetes.cri.sandbox-name is missing in annotations"),
        ("sb-2", {k: v for k, v in shim_annotations().items() if k != POD_NAMESPACE},
         "pod namespace io.kubernetes.cri.sandbox-namespace is missing in annotations"),
        ("sb-3", shim_annotations(default_vcpus="two"),
         "annotation io.katacontainers.config.hypervisor.default_vcpus: 'two' is not a valid "
         "vCPU count (expected a non-negative decimal integer)"),
        ("sb-4", shim_annotations(default_memory="-5"),
         "annotation io.katacontainers.config.hypervisor.default_memory: '-5' is not a valid "
         "memory size in MiB (expected a non-negative decimal integer)"),
        ("sb-5", shim_annotations(cc_init_data="this is [not toml"), "invalid initdata"),
    ]
    for sid, request_annotations, message in cases:
        exc = await expect_error(shim.create_vm(sid, request_annotations))
        assert exc.code == Code.INVALID_ARGUMENT, (sid, exc)
        assert message in exc.message, (sid, exc.message)
    manager = daemon.manager
    assert manager is not None and manager.records() == []
    assert network.allocated == {}  # nothing leaked
    await still_serving(shim, cloud, "sb-ok")


async def test_duplicate_create_vm(daemon: Daemon, cloud: FakeCloud, shim: Shim) -> None:
    path = await shim.create_vm("sb-dup", shim_annotations(pod="a"))
    assert await shim.create_vm("sb-dup", shim_annotations(pod="a")) == path  # same request
    exc = await expect_error(shim.create_vm("sb-dup", shim_annotations(pod="b")))
    assert (exc.code, exc.message) == (Code.ALREADY_EXISTS, "sandbox sb-dup already exists")
    await shim.start_vm("sb-dup")
    assert cloud.provider.requests[cloud.provider.created[0]].pod_name == "a"
    await shim.stop_vm("sb-dup")


async def test_unknown_sandbox(daemon: Daemon, cloud: FakeCloud, shim: Shim) -> None:
    exc = await expect_error(shim.start_vm("nope"))
    assert (exc.code, exc.message) == (
        Code.NOT_FOUND, "getting sandbox: sandbox nope does not exist")
    await shim.stop_vm("nope")  # idempotent: logged, succeeds
    await still_serving(shim, cloud, "sb-after")


async def test_cri_o_sandbox_name(daemon: Daemon, cloud: FakeCloud, shim: Shim) -> None:
    annotations = {**shim_annotations(), POD_NAME: "k8s_nginx_team-a_0d7c-uid_0",
                   POD_NAMESPACE: ""}
    await shim.create_vm("abcdef0123456789", annotations)
    await shim.start_vm("abcdef0123456789")
    request = cloud.provider.requests[cloud.provider.created[0]]
    assert (request.pod_name, request.pod_namespace) == ("nginx", "team-a")
    assert request.name == "podvm-nginx-abcdef01"
    await shim.stop_vm("abcdef0123456789")


CATALOGUE = InstanceTypeCatalogue(
    default="t3.small",
    allowed=("t3.small", "t3.large", "g5.xlarge"),
    specs=(
        InstanceTypeInfo("t3.large", 2, 8192),
        InstanceTypeInfo("t3.small", 2, 2048),
        InstanceTypeInfo("g5.xlarge", 4, 16384, gpus=1),
    ),
)


async def test_instance_type_selection_errors(
    short_dir: str, network: FakeWorkerNetwork
) -> None:
    cloud = FakeCloud(short_dir, catalogue=CATALOGUE)
    settings = make_settings(short_dir, cloud.port)
    async with Daemon(settings, cloud.provider, network=network, delete_retry=FAST_RETRY):
        shim = Shim(settings.socket)
        exc = await expect_error(shim.create_vm("sb-t1", shim_annotations(machine_type="m5.24x")))
        assert exc.code == Code.INVALID_ARGUMENT
        assert exc.message == ('failed to verify instance type: requested instance type '
                               '("m5.24x") is not part of supported instance types list')
        exc = await expect_error(shim.create_vm(
            "sb-t2", shim_annotations(default_vcpus="2", default_memory="18432")))
        assert exc.message == (
            "failed to get instance type based on vCPU and memory annotations: no instance "
            "type found for the given vcpus (2) and memory (18432)")
        # Best fits, then the default.
        for sid, hv, expected in [
            ("sb-t3", {"default_vcpus": "2", "default_memory": "4096"}, "t3.large"),
            ("sb-t4", {"default_gpus": "1"}, "g5.xlarge"),
            ("sb-t5", {}, "t3.small"),
            ("sb-t6", {"machine_type": "t3.large", "default_gpus": "1"}, "t3.large"),
        ]:
            await shim.create_vm(sid, shim_annotations(**hv))
            await shim.start_vm(sid)
            request = cloud.provider.requests[cloud.provider.created[-1]]
            assert request.spec.instance_type == expected, sid
            await shim.stop_vm(sid)
    await cloud.aclose()


async def test_image_override_is_logged(
    daemon: Daemon, cloud: FakeCloud, shim: Shim, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    await shim.create_vm("sb-img", shim_annotations(image="ami-0123"))
    await shim.start_vm("sb-img")
    assert cloud.provider.requests[cloud.provider.created[0]].spec.image == "ami-0123"
    assert any("Choosing ami-0123" in r.getMessage() for r in caplog.records)
    assert any(
        r.getMessage() == "create a sandbox sb-img for pod web in namespace default "
        "(netns: /var/run/netns/cni-test)" for r in caplog.records
    )
    await shim.stop_vm("sb-img")


def test_malformed_global_initdata_is_a_startup_error(short_dir: str) -> None:
    settings = make_settings(short_dir, 15150, initdata="bm90IGd6aXA=")
    with pytest.raises(StartupError, match="invalid INITDATA: initdata is not valid gzip"):
        prepare(settings)
    good = initdata.encode(b'version = "0.1.0"\nalgorithm = "sha384"\n[data]\n')
    assert prepare(make_settings(short_dir, 15150, initdata=good)).default_initdata == good


async def test_global_initdata_is_used_without_annotation(
    short_dir: str, network: FakeWorkerNetwork
) -> None:
    from protocols import userdata

    cloud = FakeCloud(short_dir)
    encoded = initdata.encode(b'version = "0.1.0"\nalgorithm = "sha256"\n[data]\n')
    settings = make_settings(short_dir, cloud.port, initdata=encoded, enable_scratch_space=True)
    async with Daemon(settings, cloud.provider, network=network, delete_retry=FAST_RETRY):
        shim = Shim(settings.socket)
        await shim.create_vm("sb-init")
        await shim.start_vm("sb-init")
        request = cloud.provider.requests[cloud.provider.created[0]]
        files = {f.path: f.content for f in userdata.parse(request.user_data)}
        assert files[userdata.INITDATA_PATH].strip() == encoded
        assert files[userdata.SCRATCH_SPACE_MARKER_PATH] == ""
        await shim.stop_vm("sb-init")
    await cloud.aclose()
