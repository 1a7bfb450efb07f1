"""What the cloud providers' namespace worlds (AWS on moto, Azure on the loopback ARM, GCP on
the loopback Compute API) share: the directory the adaptor under test keeps its socket,
pods and the stand-in agents in, the adaptor's provider-independent environment, and the
wait until its hypervisor socket answers."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from protocols.kata import hypervisor_pb2
from protocols.ttrpc import Client, ConnectionClosed, TTRPCError

REPO = str(Path(__file__).resolve().parents[2])


@dataclass
class WorldDir:
    """A world's directory: ``hv.sock``, ``pods/``, ``agents/`` and the log files."""

    root: str

    @property
    def socket(self) -> str:
        return os.path.join(self.root, "hv.sock")

    @property
    def pods_dir(self) -> str:
        return os.path.join(self.root, "pods")

    @property
    def agents_dir(self) -> str:
        return os.path.join(self.root, "agents")

    def read(self, name: str) -> str:
        """A file of the world's directory ("" while it does not exist)."""
        try:
            return Path(self.root, name).read_text(errors="replace")
        except FileNotFoundError:
            return ""


def adaptor_env(world: WorldDir, *, node: str, forwarder_port: int,
                log_level: str = "debug") -> dict[str, str]:
    """The settings every world's adaptor runs with, besides its provider's own: no tunnel,
    the world's socket and pods directory, a free probe port, short timeouts."""
    return {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "PYTHONPATH": REPO,
        "HOME": world.root,
        "TUNNEL_TYPE": "none",
        "NODE_NAME": node,
        "FORWARDER_PORT": str(forwarder_port),
        "REMOTE_HYPERVISOR_ENDPOINT": world.socket,
        "PODS_DIR": world.pods_dir,
        "PROBE_PORT": "0",
        "PROXY_TIMEOUT": "30s",
        "LOG_LEVEL": log_level,
        "SHUTDOWN_GRACE_PERIOD": "5s",
    }


async def wait_serving(proc: subprocess.Popen[bytes], socket: str, log: Callable[[], str],
                       timeout: float = 60.0) -> None:
    """Return once the adaptor's hypervisor socket answers Version; fail with the end of its
    log if it exits first."""
    async with asyncio.timeout(timeout):
        while True:
            if proc.poll() is not None:
                raise AssertionError(
                    f"cloud-api-adaptor exited with {proc.returncode}: {log()[-3000:]}"
                )
            try:
                async with await Client.connect_unix(socket) as client:
                    await client.call("hypervisor.Hypervisor", "Version",
                                      hypervisor_pb2.VersionRequest(),
                                      hypervisor_pb2.VersionResponse, timeout=2)
                return
            except (OSError, ConnectionClosed, TTRPCError):
                await asyncio.sleep(0.1)
