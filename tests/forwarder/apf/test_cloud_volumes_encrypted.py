"""Encrypted cloud volumes: the forwarder asks our confidential data hub to SecureMount a
LUKS2 loop device; the hub gets the key through the attestation-agent (a process, sample
attester) from the loopback Trustee KBS and runs the real cryptsetup.

Opening a LUKS2 device needs device-mapper in the kernel. Where the kernel has none (some
CI machines), luksOpen fails before it looks at the key, so the hub under test checks the
key first with ``cryptsetup open --test-passphrase`` (real cryptsetup, the key the hub was
given): a wrong key then fails as it would in production, and a right key fails only at the
device-mapper step. The full data path (data readable in the mount, unreadable on the raw
device, a mapper opened and closed) runs where device-mapper exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from guest.cdh.config import CdhConfig, KbcConfig
from guest.cdh.hub import Hub
from guest.cdh.kbc import AaTokenSource, CcKbc
from guest.cdh.secure_mount import Cryptsetup, SecureMounter, run
from guest.cdh.service import CdhServices
from protocols.ttrpc import Code, Server, TTRPCError
from tests.forwarder.apf.blockdev import (
    CHEAP_PBKDF,
    CRYPTSETUP,
    Disks,
    blkid_value,
    contains,
    create,
    destroy,
    device_mapper_works,
    disks,
    luks_format,
    mounted_from,
    pod_vm,
    read,
    request,
    sent_mounts,
    sh,
    tools_missing,
    volume,
    write,
)
from tests.forwarder.apf.helpers import FakeAgent
from tests.guest.daemons import BIN
from tests.guest.kbs_server import ALLOW_ALL, KbsState, LoopbackKbs

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(bool(tools_missing()) or not os.path.exists(CRYPTSETUP),
                       reason="block device tools or cryptsetup missing"),
]

DISK_KEY = b"\x01disk key served by the KBS\xfe" * 4
OTHER_KEY = b"a key for another disk"
MARKER = b"PLAINTEXT-MARKER-7f3a9c" * 8
MAPPER = "caa-vol-0"
HAS_DM = device_mapper_works()


class KeyCheckingCryptsetup(Cryptsetup):
    """The real cryptsetup; the key is tested against the header before luksOpen."""

    async def open(self, device: str, header: Path | None, name: str, key: bytes) -> None:
        args = [self.binary, "open", "--test-passphrase"]
        if header is not None:
            args += ["--header", str(header)]
        await run([*args, "-d", "-", device], stdin=key)
        await super().open(device, header, name, key)


@dataclass
class DataHub:
    socket: str
    kbs: LoopbackKbs
    headers: Path


async def _wait_for_socket(path: Path, proc: asyncio.subprocess.Process) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while loop.time() < deadline:
        if proc.returncode is not None:
            raise RuntimeError(f"attestation-agent exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_unix_connection(str(path))
            writer.close()
            return
        await asyncio.sleep(0.05)  # polling a condition with a deadline
    raise TimeoutError("attestation-agent did not come up")


@contextlib.asynccontextmanager
async def attestation_agent(workdir: Path, kbs_url: str) -> AsyncIterator[Path]:
    config = workdir / "aa.toml"
    config.write_text(f'[token_configs.kbs]\nurl = "{kbs_url}"\n')
    socket_path = workdir / "aa.sock"
    log_fd = os.open(workdir / "aa.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        proc = await asyncio.create_subprocess_exec(
            str(BIN / "attestation-agent"), "-c", str(config), "-a", f"unix://{socket_path}",
            stdout=log_fd, stderr=log_fd)
    finally:
        os.close(log_fd)
    try:
        await _wait_for_socket(socket_path, proc)
        yield socket_path
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[DataHub]:
    kbs = LoopbackKbs(KbsState(policy=ALLOW_ALL, resources={
        "default/key/disk": DISK_KEY, "default/key/other": OTHER_KEY}))
    await kbs.start()
    workdir = tmp_path / "guest"
    workdir.mkdir()
    try:
        async with attestation_agent(workdir, kbs.url) as aa_socket:
            data_hub = Hub(CdhConfig(KbcConfig("cc_kbc", kbs.url)),
                           CcKbc(kbs.url, None, AaTokenSource(aa_socket)))
            services = CdhServices(data_hub)
            services.mounter = SecureMounter(
                data_hub.get_resource, services.sealed.unseal,
                cryptsetup=KeyCheckingCryptsetup(CRYPTSETUP, CHEAP_PBKDF),
                headers_dir=workdir / "luks-headers")
            server = Server()
            services.register(server)
            socket_path = str(workdir / "cdh.sock")
            await server.start_unix(socket_path)
            try:
                yield DataHub(socket_path, kbs, workdir / "luks-headers")
            finally:
                await server.shutdown(grace=0)
                await data_hub.aclose()
    finally:
        await kbs.aclose()


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[Disks]:
    root = tmp_path / "vm"
    root.mkdir()
    with disks(root) as made:
        made.mappers.add(MAPPER)
        yield made


def encrypted(key_id: str = "default/key/disk") -> dict[str, str]:
    return volume(0, "/secrets", encrypt_type="luks2", key_id=key_id)


def secure_mount_failure(vm: Disks, device: str) -> str:
    return (f"failed to secure-mount cloud volume vol-0 at {vm.base}/vol-0: CDH secure_mount "
            f"failed for {device}: CDH SecureMount RPC failed: [CDH] [ERROR]: Secure Mount "
            "failed")


async def test_encrypted_volume_is_opened_with_the_kbs_key(
    vm: Disks, agent: FakeAgent, hub: DataHub, caplog: pytest.LogCaptureFixture
) -> None:
    device = vm.add(0)
    luks_format(device, DISK_KEY)
    async with pod_vm(vm, agent, hub.socket) as client:
        if not HAS_DM:
            with pytest.raises(TTRPCError) as info:
                await create(client, request({"vol-0": encrypted()}, "/secrets"))
            assert (info.value.code, info.value.message) == (
                Code.INTERNAL, secure_mount_failure(vm, device))
            assert hub.kbs.state.resource_count == 1
            assert "No key available" not in caplog.text  # the KBS key opened the header
            assert "luksOpen failed" in caplog.text and "device-mapper" in caplog.text
            assert vm.mounted_below_base() == [] and vm.open_mappers() == []
            assert agent.calls("CreateContainer") == []
            return
        await create(client, request({"vol-0": encrypted()}, "/secrets"))
        assert sent_mounts(agent)["/secrets"] == (f"{vm.base}/vol-0", "bind")
        assert mounted_from(f"{vm.base}/vol-0") == (f"/dev/mapper/{MAPPER}", "ext4")
        write(f"{vm.base}/vol-0/secret.txt", MARKER)
        await destroy(client)
        assert vm.mounted_below_base() == [] and vm.open_mappers() == []
    assert blkid_value(device, "TYPE") == "crypto_LUKS"
    assert not contains(device, MARKER)  # the raw device holds only ciphertext

    async with pod_vm(vm, agent, hub.socket) as client:  # the next pod reads it back
        await create(client, request({"vol-0": encrypted()}, "/secrets"))
        assert read(f"{vm.base}/vol-0/secret.txt") == MARKER
        await destroy(client)
        assert vm.mounted_below_base() == [] and vm.open_mappers() == []


async def test_wrong_key_is_refused_and_the_next_call_works(
    vm: Disks, agent: FakeAgent, hub: DataHub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    device = vm.add(0)
    luks_format(device, DISK_KEY)
    plain = vm.add(1)
    async with pod_vm(vm, agent, hub.socket) as client:
        with pytest.raises(TTRPCError) as info:
            await create(client, request({"vol-0": encrypted("default/key/other")}, "/secrets"))
        assert (info.value.code, info.value.message) == (
            Code.INTERNAL, secure_mount_failure(vm, device))
        assert "No key available with this passphrase" in caplog.text
        assert vm.mounted_below_base() == [] and vm.open_mappers() == []
        assert agent.calls("CreateContainer") == []

        await create(client, request({"vol-1": volume(1, "/data")}, "/data"))
        assert mounted_from(f"{vm.base}/vol-1") == (plain, "ext4")
        await destroy(client)
        assert vm.mounted_below_base() == []
    assert blkid_value(device, "TYPE") == "crypto_LUKS"  # untouched


async def test_empty_disk_is_encrypted_with_the_kbs_key(
    vm: Disks, agent: FakeAgent, hub: DataHub
) -> None:
    device = vm.add(0)
    async with pod_vm(vm, agent, hub.socket) as client:
        if HAS_DM:
            await create(client, request({"vol-0": encrypted()}, "/secrets"))
            write(f"{vm.base}/vol-0/secret.txt", MARKER)
            assert read(f"{vm.base}/vol-0/secret.txt") == MARKER
            await destroy(client)
            assert not contains(device, MARKER)
        else:
            with pytest.raises(TTRPCError) as info:
                await create(client, request({"vol-0": encrypted()}, "/secrets"))
            assert info.value.message == secure_mount_failure(vm, device)
        assert vm.mounted_below_base() == [] and vm.open_mappers() == []
    # the hub formatted the disk (header kept by the hub) with exactly the KBS key
    (header,) = hub.headers.iterdir()
    for key, status in ((DISK_KEY, 0), (OTHER_KEY, 2)):
        result = sh(CRYPTSETUP, "open", "--test-passphrase", "--header", str(header), "-d", "-",
                    device, stdin=key)
        assert result.returncode == status, result.stderr
