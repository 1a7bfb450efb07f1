"""CreateContainer / CreateSandbox rewriting, bind sources, CSI waits, cloud volumes."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from forwarder.apf.interceptor import CLOUD_VOLUMES_KEY, Interceptor
from forwarder.apf.relay import AgentRelay
from forwarder.apf.volumes import VOLUME_TARGET_PATH_KEY, mountinfo_checker
from protocols.kata import agent_pb2, oci_pb2
from protocols.ttrpc import Client, Code, TTRPCError
from protocols.ttrpc.relay import RelayServer
from tests.forwarder.apf.helpers import FakeAgent, wait_until

AGENT = "grpc.AgentService"
NETNS = "/run/netns/podns-test"
MOUNTINFO_ROOT = "22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n"


class Setup:
    def __init__(self, tmp_path: Path) -> None:
        self.mountinfo = tmp_path / "mountinfo"
        self.mountinfo.write_text(MOUNTINFO_ROOT)
        self._check = mountinfo_checker(str(self.mountinfo))
        self.checks: list[str] = []  # every path the interceptor asked about, in order

    def is_mounted(self, path: str) -> bool:
        self.checks.append(path)
        return self._check(path)

    def add_mount(self, path: str) -> None:
        escaped = path.replace(" ", "\\040")
        with self.mountinfo.open("a") as handle:
            handle.write(f"99 22 0:50 / {escaped} rw - tmpfs tmpfs rw\n")


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    return Setup(tmp_path)


@pytest.fixture
async def client(agent: FakeAgent, setup: Setup, tmp_path: Path) -> AsyncIterator[Client]:
    relay = AgentRelay(agent.path, dial_timeout=5)
    interceptor = Interceptor(relay, pod_netns=NETNS, pod="default/nginx",
                              is_mounted=setup.is_mounted,
                              mount_wait_limit=2.0, bind_roots=(f"{tmp_path}/host/",))
    server = RelayServer(interceptor.policy())
    path = str(tmp_path / "fwd.sock")
    await server.start_unix(path)
    async with await Client.connect_unix(path) as c:
        yield c
    agent.release.set()
    await server.shutdown(grace=0)
    await relay.aclose()


def container(spec: oci_pb2.Spec) -> agent_pb2.CreateContainerRequest:
    return agent_pb2.CreateContainerRequest(container_id="c1", exec_id="c1", OCI=spec)


async def create(client: Client, request: agent_pb2.CreateContainerRequest) -> None:
    await client.call_raw(AGENT, "CreateContainer", request.SerializeToString(), timeout=10)


def forwarded(agent: FakeAgent) -> agent_pb2.CreateContainerRequest:
    return agent_pb2.CreateContainerRequest.FromString(agent.calls("CreateContainer")[-1].payload)


async def test_linux_section_is_created_when_absent(client: Client, agent: FakeAgent) -> None:
    await create(client, container(oci_pb2.Spec(Version="1.1.0")))
    got = forwarded(agent)
    assert got.OCI.HasField("Linux")
    assert [(n.Type, n.Path) for n in got.OCI.Linux.Namespaces] == [("network", NETNS)]


async def test_spec_without_oci_is_refused(client: Client, agent: FakeAgent) -> None:
    with pytest.raises(TTRPCError) as info:
        await create(client, agent_pb2.CreateContainerRequest(container_id="c1"))
    assert info.value.code == Code.INVALID_ARGUMENT
    assert agent.calls("CreateContainer") == []


async def test_undecodable_create_container_is_an_error(client: Client, agent: FakeAgent
                                                        ) -> None:
    with pytest.raises(TTRPCError) as info:
        await client.call_raw(AGENT, "CreateContainer", b"\x0a\xff", timeout=5)
    assert info.value.code == Code.INTERNAL
    assert "unmarshalling" in info.value.message
    assert agent.seen == []


async def test_bad_cloud_volumes_annotation_is_refused(client: Client,
                                                       agent: FakeAgent) -> None:
    spec = oci_pb2.Spec(Annotations={CLOUD_VOLUMES_KEY: '{"vol-0":{"mount_point":"/data"}}'})
    with pytest.raises(TTRPCError) as info:
        await create(client, container(spec))
    assert info.value.code == Code.INVALID_ARGUMENT
    assert info.value.message == "cloud volume vol-0 missing required mount_point or lun field"
    assert agent.calls("CreateContainer") == []


async def test_empty_cloud_volumes_annotation_is_no_volume(client: Client,
                                                           agent: FakeAgent) -> None:
    await create(client, container(oci_pb2.Spec(Annotations={CLOUD_VOLUMES_KEY: ""})))
    assert len(agent.calls("CreateContainer")) == 1


async def test_missing_bind_sources_become_directories(client: Client, agent: FakeAgent,
                                                       tmp_path: Path) -> None:
    by_type = tmp_path / "host" / "by-type"
    by_option = tmp_path / "host" / "by-rbind"
    not_bind = tmp_path / "host" / "tmpfs"
    existing_file = tmp_path / "resolv.conf"
    existing_file.write_text("x")
    spec = oci_pb2.Spec(Mounts=[
        oci_pb2.Mount(destination="/a", source=str(by_type), type="bind", options=["ro"]),
        oci_pb2.Mount(destination="/b", source=str(by_option), type="none",
                      options=["rbind", "rw"]),
        oci_pb2.Mount(destination="/c", source=str(not_bind), type="tmpfs"),
        oci_pb2.Mount(destination="/etc/resolv.conf", source=str(existing_file), type="bind"),
        oci_pb2.Mount(destination="/d", source="relative/dir", type="bind"),
    ])
    await create(client, container(spec))
    assert by_type.is_dir() and by_option.is_dir()
    assert not not_bind.exists()
    assert existing_file.read_text() == "x"
    assert [m.source for m in forwarded(agent).OCI.Mounts][:2] == [str(by_type), str(by_option)]


async def test_waits_for_csi_target_path_mount(client: Client, agent: FakeAgent,
                                               setup: Setup, tmp_path: Path) -> None:
    target = tmp_path / "kubelet" / "pods" / "u" / "volumes" / "kubernetes.io~csi" / "pv 1"
    target.mkdir(parents=True)
    spec = oci_pb2.Spec(
        Annotations={VOLUME_TARGET_PATH_KEY: f"/other/path, {target}"},
        Mounts=[oci_pb2.Mount(destination="/data", source=str(target), type="bind")])
    call = asyncio.create_task(create(client, container(spec)))
    # It has found the target not mounted and asks again: it is waiting for the mount.
    await wait_until(lambda: setup.checks.count(str(target)) >= 2)
    assert not call.done()
    assert agent.calls("CreateContainer") == []
    setup.add_mount(str(target))
    await asyncio.wait_for(call, 5)
    assert len(agent.calls("CreateContainer")) == 1


async def test_csi_target_path_never_mounted_fails(client: Client, agent: FakeAgent,
                                                   tmp_path: Path) -> None:
    target = tmp_path / "never-mounted"
    target.mkdir()
    spec = oci_pb2.Spec(
        Annotations={VOLUME_TARGET_PATH_KEY: str(target)},
        Mounts=[oci_pb2.Mount(destination="/data", source=str(target), type="bind")])
    with pytest.raises(TTRPCError) as info:
        await create(client, container(spec))
    assert info.value.code == Code.DEADLINE_EXCEEDED
    assert f"Timeout waiting for device to mount to {target}" in info.value.message
    assert agent.calls("CreateContainer") == []


async def test_logged_only_calls_pass_unchanged(client: Client, agent: FakeAgent) -> None:
    for method, message in (
        ("StartContainer", agent_pb2.StartContainerRequest(container_id="c1")),
        ("RemoveContainer", agent_pb2.RemoveContainerRequest(container_id="c1", timeout=3)),
        ("DestroySandbox", agent_pb2.DestroySandboxRequest()),
    ):
        payload = message.SerializeToString()
        await client.call_raw(AGENT, method, payload, timeout=5)
        assert agent.calls(method)[0].payload == payload


async def test_create_sandbox_without_dns_is_not_reencoded(client: Client,
                                                           agent: FakeAgent) -> None:
    payload = agent_pb2.CreateSandboxRequest(hostname="h", sandbox_id="s").SerializeToString()
    payload += b"\x98\x06\x01"  # an unknown field stays where it was
    await client.call_raw(AGENT, "CreateSandbox", payload, timeout=5)
    assert agent.calls("CreateSandbox")[0].payload == payload


@pytest.mark.root
def test_real_mount_is_seen(tmp_path: Path) -> None:
    import subprocess

    target = tmp_path / "mnt"
    target.mkdir()
    check = mountinfo_checker()
    assert not check(str(target))
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(target)], check=True)
    try:
        assert check(str(target))
        assert check(str(target) + os.sep)
    finally:
        subprocess.run(["umount", str(target)], check=True)


# --------------------------------------------------------------------------- side effects


async def test_bind_sources_outside_kata_roots_are_not_created(
    client: Client, agent: FakeAgent, tmp_path: Path
) -> None:
    outside = tmp_path / "etc" / "cron.d"
    escape = f"{tmp_path}/host/../escaped"
    spec = oci_pb2.Spec(Mounts=[
        oci_pb2.Mount(destination="/a", source=str(outside), type="bind"),
        oci_pb2.Mount(destination="/b", source=escape, type="bind"),
        oci_pb2.Mount(destination="/c", source=f"{tmp_path}/host", type="bind"),
        oci_pb2.Mount(destination="/d", source=f"{tmp_path}/host/ok", type="bind"),
    ])
    await create(client, container(spec))
    assert not (tmp_path / "etc").exists()
    assert not (tmp_path / "escaped").exists()
    assert (tmp_path / "host" / "ok").is_dir()
    # The call still reaches the agent unchanged, which reports any mount error itself.
    assert [m.source for m in forwarded(agent).OCI.Mounts] == [m.source for m in spec.Mounts]


async def test_bind_source_creation_does_not_follow_symlinks(
    client: Client, agent: FakeAgent, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (tmp_path / "host").mkdir()
    # A container that can write into a shared volume plants a link to elsewhere.
    (tmp_path / "host" / "link").symlink_to(victim)
    spec = oci_pb2.Spec(Mounts=[
        oci_pb2.Mount(destination="/a", source=f"{tmp_path}/host/link/new", type="bind"),
    ])
    await create(client, container(spec))
    assert list(victim.iterdir()) == []
    assert len(agent.calls("CreateContainer")) == 1


def test_kata_roots_are_the_guest_shared_directories() -> None:
    from forwarder.apf.volumes import KATA_SHARED_ROOTS, bind_source_root

    assert KATA_SHARED_ROOTS == (
        "/run/kata-containers/shared/containers/", "/run/kata-containers/sandbox/"
    )
    cid = "/run/kata-containers/shared/containers/0123abcd-4567-hostname"
    assert bind_source_root(cid) == "/run/kata-containers/shared/containers/"
    assert bind_source_root("/run/kata-containers/sandbox/local/vol") is not None
    for bad in ("/run/kata-containers/shared/containers/", "/run/kata-containers/sandbox",
                "/run/kata-containers/sandbox/../../etc", "/etc/cron.d",
                "/run/kata-containers/sandbox//x", "/run/kata-containers/sandbox/x/",
                "relative/run/kata-containers/sandbox/x"):
        assert bind_source_root(bad) is None, bad


async def test_caller_network_namespace_is_replaced(client: Client, agent: FakeAgent) -> None:
    spec = oci_pb2.Spec(Linux=oci_pb2.Linux(Namespaces=[
        oci_pb2.LinuxNamespace(Type="pid"),
        oci_pb2.LinuxNamespace(Type="network", Path="/proc/1/ns/net"),
        oci_pb2.LinuxNamespace(Type="mount"),
        oci_pb2.LinuxNamespace(Type="network", Path=""),
    ]))
    await create(client, container(spec))
    got = [(n.Type, n.Path) for n in forwarded(agent).OCI.Linux.Namespaces]
    assert got == [("pid", ""), ("mount", ""), ("network", NETNS)]
