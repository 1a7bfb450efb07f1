"""Bad requests get a clear ttrpc error, lose nothing, and the daemon keeps serving."""

from __future__ import annotations

import logging
import os

import pytest

from adaptor.server import Daemon, StartupError, prepare
from adaptor.tls import CertificateAuthority, new_client_certificate
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
        # Upstream selects in the provider's CreateInstance (cloud-providers/util.go,
        # SelectInstanceTypeToUse), so CreateVM succeeds and StartVM fails with cloud.go's
        # "creating an instance : " prefix and gRPC's Unknown code.
        await shim.create_vm("sb-t1", shim_annotations(machine_type="m5.24x"))
        exc = await expect_error(shim.start_vm("sb-t1"))
        assert exc.code == Code.UNKNOWN
        assert exc.message == ('creating an instance : failed to verify instance type: '
                               'requested instance type ("m5.24x") is not part of supported '
                               'instance types list')
        await shim.create_vm("sb-t2", shim_annotations(default_vcpus="2", default_memory="18432"))
        exc = await expect_error(shim.start_vm("sb-t2"))
        assert exc.message == (
            "creating an instance : failed to get instance type based on vCPU and memory "
            "annotations: no instance type found for the given vcpus (2) and memory (18432)")
        assert cloud.provider.created == []
        for sid in ("sb-t1", "sb-t2"):
            await shim.stop_vm(sid)
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


BAD_IDS = ["../../x", "/abs", "a/b", "..", ".", "a" * 129, "sb\x00x", "sb x", "sb\n", "é"]


def tree(root: str) -> set[str]:
    return {os.path.join(d, name) for d, dirs, files in os.walk(root) for name in dirs + files}


async def test_sandbox_ids_cannot_leave_the_pods_dir(
    short_dir: str, cloud: FakeCloud, network: FakeWorkerNetwork
) -> None:
    # The pods dir sits two levels down, so that "../../x" would land in this test's dir.
    settings = make_settings(short_dir, cloud.port, pods_dir=f"{short_dir}/a/b/pods")
    absolute = f"{short_dir}/abs"
    abs_existed = os.path.exists("/abs")  # noqa: ASYNC240
    async with Daemon(settings, cloud.provider, network=network, delete_retry=FAST_RETRY):
        shim = Shim(settings.socket)
        before = tree(short_dir)
        for sid in [*BAD_IDS, absolute]:
            for call in (shim.create_vm(sid), shim.start_vm(sid), shim.stop_vm(sid)):
                exc = await expect_error(call)
                assert exc.code == Code.INVALID_ARGUMENT, (sid, exc)
                assert "invalid sandbox id" in exc.message, (sid, exc.message)
        assert tree(short_dir) == before  # nothing written anywhere, the pods dir included
        assert os.path.exists("/abs") == abs_existed  # noqa: ASYNC240
        assert cloud.provider.create_calls == 0 and network.allocated == {}
        # The longest and the shim's own ids are fine.
        for sid in ("a" * 128, "0123456789abcdef" * 4, "A_b-9"):
            path = await shim.create_vm(sid)
            assert os.path.dirname(path) == os.path.join(settings.pods_dir, sid)
            await shim.stop_vm(sid)
        await still_serving(shim, cloud, "sb-ok")


def test_manual_tls_mode_warns_that_pod_vms_cannot_be_told_apart(
    short_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    ca = CertificateAuthority()
    client = new_client_certificate()
    files = {"ca.crt": ca.root_pem, "client.crt": client.cert_pem, "client.key": client.key_pem}
    for name, text in files.items():
        with open(os.path.join(short_dir, name), "w") as handle:
            handle.write(text)
    manual = make_settings(short_dir, 15150, ca_cert_file=f"{short_dir}/ca.crt",
                           cert_file=f"{short_dir}/client.crt",
                           cert_key=f"{short_dir}/client.key")
    with caplog.at_level(logging.WARNING, logger="adaptor.server"):
        prepare(manual)
    warnings = [r.getMessage() for r in caplog.records if "CACERT_FILE" in r.getMessage()]
    assert len(warnings) == 1
    assert "podvm-server" in warnings[0] and "cannot be told apart" in warnings[0]
    assert "impostor at a reused IP is refused" in warnings[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="adaptor.server"):
        prepare(make_settings(short_dir, 15150))  # automatic mode: nothing to warn about
    assert not [r for r in caplog.records if "CACERT_FILE" in r.getMessage()]
