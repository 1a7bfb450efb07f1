"""``cloud-api-adaptor libvirt`` as a subprocess inside the test libvirtd's network namespace.

The pod VMs' addresses exist only in that namespace, so the adaptor (which dials their
forwarder port) runs there too. Its hypervisor socket is a file, reachable from the test's
own namespace; readiness is the first ``Version`` call that answers on it (the probe port is
inside the namespace).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import libvirt

from protocols.ttrpc import ConnectionClosed, TTRPCError
from providers.base import NODE_TAG
from providers.libvirt import metadata
from tests.adaptor.shim import Shim
from tests.fakes import leakcheck
from tests.providers.libvirt.libvirtd import URI, Libvirtd

REPO = str(Path(__file__).resolve().parents[3])


def adaptor_env(root: str, daemon: Libvirtd, **extra: str) -> dict[str, str]:
    """The settings of one adaptor on the test daemon, as the DaemonSet passes them."""
    return {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "PYTHONPATH": REPO,
        "REMOTE_HYPERVISOR_ENDPOINT": os.path.join(root, "hv.sock"),
        "PODS_DIR": os.path.join(root, "pods"),
        "CLOUD_PROVIDER": "libvirt",
        "CLOUD_CONFIG_VERIFY": "true",
        "LIBVIRT_URI": URI,
        "LIBVIRT_POOL": daemon.pool,
        "LIBVIRT_NET": daemon.network,
        "LIBVIRT_VOL_NAME": daemon.base_volume,
        "LIBVIRT_DOMAIN_TYPE": "qemu",
        "LIBVIRT_ROOT_DISK_SIZE": "2",
        "TUNNEL_TYPE": "none",
        "PROBE_PORT": "0",
        "LOG_LEVEL": "debug",
        "SHUTDOWN_GRACE_PERIOD": "5s",
        **extra,
    }


class AdaptorInNetns:
    """Start, wait for, stop and read the log of one adaptor process."""

    def __init__(self, netns: str, env: Mapping[str, str], log_path: str,
                 command: Sequence[str] = ()) -> None:
        self.netns = netns
        self.env = dict(env)
        self.log_path = log_path
        self.command = tuple(command) or (sys.executable, "-m", "adaptor", "libvirt")
        self.shim = Shim(self.env["REMOTE_HYPERVISOR_ENDPOINT"])
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, timeout: float = 60.0) -> None:
        with open(self.log_path, "ab") as log:  # noqa: ASYNC230 - tiny, test setup
            self.proc = await asyncio.create_subprocess_exec(
                "ip", "netns", "exec", self.netns, *self.command,
                cwd=REPO, env=self.env, stdout=log, stderr=log,
            )
        async with asyncio.timeout(timeout):
            while True:
                if self.proc.returncode is not None:
                    raise AssertionError(f"the adaptor exited:\n{self.log()[-4000:]}")
                with contextlib.suppress(OSError, TTRPCError, ConnectionClosed):
                    await self.shim.version()
                    return
                await asyncio.sleep(0.1)

    def log(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    async def wait_for_log(self, text: str, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while text not in self.log():
                if self.proc is not None and self.proc.returncode is not None:
                    raise AssertionError(f"the adaptor exited:\n{self.log()[-4000:]}")
                await asyncio.sleep(0.2)

    async def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: the exit status of a graceful shutdown."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(timeout):
            return await self.proc.wait()

    async def aclose(self) -> None:
        """Kill it if it still runs, then scan its log for secrets."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if os.path.exists(self.log_path):  # noqa: ASYNC240
            leaks = leakcheck.scan_log_file(self.log_path, "cloud-api-adaptor libvirt")
            assert not leaks, leaks


def remove_node_leftovers(conn: libvirt.virConnect, daemon: Libvirtd, node: str) -> list[str]:
    """After a failed test: remove the domains tagged with ``node`` and the volumes named
    after them, so that no pod VM keeps running for the rest of the session. Returns the
    names removed (empty when the adaptor cleaned up, as it must)."""
    removed = []
    for dom in conn.listAllDomains(0):
        with contextlib.suppress(libvirt.libvirtError):
            meta = metadata.from_domain_xml(dom.XMLDesc(0))
            if meta is None or meta.tags.get(NODE_TAG) != node:
                continue
            name = dom.name()
            if dom.isActive():
                dom.destroy()
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
            removed.append(name)
    pool = conn.storagePoolLookupByName(daemon.pool)
    for name in removed:
        for volume in (f"{name}-root.qcow2", f"{name}-cloudinit.iso"):
            with contextlib.suppress(libvirt.libvirtError):
                pool.storageVolLookupByName(volume).delete(0)
    return removed


@contextlib.asynccontextmanager
async def adaptor_session(
    daemon: Libvirtd, prefix: str, command: Sequence[str] = (), **env: str
) -> AsyncIterator[tuple[AdaptorInNetns, libvirt.virConnect, dict[str, str]]]:
    """An adaptor for ``daemon`` on a node of its own (``env`` on top of :func:`adaptor_env`),
    started; yields it, a libvirt connection and its settings. Afterwards it is stopped, the
    end of its log printed (pytest shows it when the test failed), the pod VMs it left
    behind removed, and its directory (``/tmp/<prefix>*``: agent socket paths stay short)."""
    root = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    node = f"node-{uuid.uuid4().hex[:6]}"
    settings = adaptor_env(root, daemon, **{"NODE_NAME": node, **env})
    proc = AdaptorInNetns(daemon.netns, settings, f"{root}/adaptor.log", command)
    conn = libvirt.open(URI)
    try:
        await proc.start()
        yield proc, conn, settings
    finally:
        try:
            await proc.aclose()
        finally:
            print(proc.log()[-20000:])
            try:
                removed = remove_node_leftovers(conn, daemon, node)
                if removed:
                    print(f"removed pod VMs the adaptor left behind: {removed}")
            finally:
                conn.close()
                shutil.rmtree(root, ignore_errors=True)
