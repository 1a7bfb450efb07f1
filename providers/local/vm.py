"""Supervisor of one local pod VM: ``python -m providers.local.vm --dir DIR ...``.

It plays the pod VM's boot chain (systemd units on a real pod VM) inside the VM's network
namespace, in the same order:

1. ``process-user-data provision-files`` reads ``DIR/cidata/user-data`` and writes
   ``DIR/run/peerpod/`` (apf.json, initdata, aa.toml, ...); a failure ends the VM.
2. the agent (the ``--agent-command`` or the development stand-in for kata-agent) is
   started on ``DIR/agent.sock`` and awaited until the socket exists;
3. ``agent-protocol-forwarder`` is started with its config, agent socket and the VM's pod
   namespace; its ``READY=1`` arrives on a private notify socket and is logged.

The agent and the forwarder are restarted 5 s after a failure exit, as systemd's
``Restart=on-failure`` does for them. SIGTERM/SIGINT stops both and exits 0. The provider
starts this program as the leader of a new session, so one ``killpg`` ends the whole VM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shlex
import signal
import socket
import sys
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from providers.local.layout import VmPaths, poll_until
from runtime import aio

log = logging.getLogger("providers.local.vm")

PROVISION_TIMEOUT = 120.0
USER_DATA_FETCH_TIMEOUT = 60
AGENT_SOCKET_TIMEOUT = 60.0
RESTART_DELAY = 5.0
STOP_GRACE = 3.0


@dataclass(frozen=True, slots=True)
class VmConfig:
    paths: VmPaths
    instance_id: str
    listen: str  # host:port of the forwarder
    pod_netns: str  # path of the VM's pod network namespace
    process_user_data: str
    forwarder: str
    agent_command: str = ""  # "" = the development agent


def agent_argv(config: VmConfig, python: str = sys.executable) -> list[str]:
    """The agent's command line, ``{socket}`` replaced by the VM's agent socket path."""
    socket_path = str(config.paths.agent_socket)
    if not config.agent_command.strip():
        return [python, "-m", "providers.local.devagent", "--socket", socket_path,
                "--record", str(config.paths.agent_calls)]
    return [arg.replace("{socket}", socket_path) for arg in shlex.split(config.agent_command)]


def provision_argv(config: VmConfig) -> list[str]:
    paths = config.paths
    return [
        config.process_user_data, "provision-files",
        "--peerpod-dir", str(paths.peerpod_dir),
        "--cidata-dir", str(paths.cidata),
        "--dmi-dir", str(paths.root / "dmi"),  # absent: no cloud to detect
        "--tpm-device", "",  # no TPM: PCR 8 is not extended
        "-t", str(USER_DATA_FETCH_TIMEOUT),
    ]


def forwarder_argv(config: VmConfig) -> list[str]:
    return [
        config.forwarder,
        "-config", str(config.paths.apf_json),
        "-listen", config.listen,
        "-kata-agent-socket", str(config.paths.agent_socket),
        "-pod-namespace", config.pod_netns,
    ]


def child_environ(base: Mapping[str, str], **extra: str) -> dict[str, str]:
    """The children's environment: ours without systemd's notify socket, plus ``extra``."""
    env = {k: v for k, v in base.items() if k != "NOTIFY_SOCKET"}
    env.update(extra)
    return env


class VmSupervisor:
    def __init__(self, config: VmConfig, environ: Mapping[str, str]) -> None:
        self._config = config
        self._environ = environ
        self._stop = asyncio.Event()
        self._notify: socket.socket | None = None

    @property
    def _vm(self) -> str:
        return self._config.instance_id

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)
        try:
            if not await self._provision():
                return 1
            env = child_environ(self._environ, KATA_AGENT_SOCKET=str(
                self._config.paths.agent_socket))
            async with asyncio.TaskGroup() as group:
                agent_ready = asyncio.Event()
                group.create_task(self._keep("agent", agent_argv(self._config), env,
                                             ready=agent_ready, wait_socket=True))
                await _first(agent_ready.wait(), self._stop.wait())
                if not self._stop.is_set():
                    fwd_env = child_environ(self._environ, **self._open_notify())
                    group.create_task(self._keep("forwarder", forwarder_argv(self._config),
                                                 fwd_env))
            return 0
        finally:
            self._close_notify()

    def _on_signal(self, signum: int) -> None:
        log.info("vm=%s: %s received, stopping the pod VM", self._vm, signal.Signals(signum).name)
        self._stop.set()

    async def _provision(self) -> bool:
        argv = provision_argv(self._config)
        log.info("vm=%s: running %s", self._vm, shlex.join(argv))
        proc = await asyncio.create_subprocess_exec(*argv, env=child_environ(self._environ))
        try:
            async with asyncio.timeout(PROVISION_TIMEOUT):
                code = await _first(proc.wait(), self._stop.wait())
        except TimeoutError:
            code = None
            log.error("vm=%s: process-user-data did not finish in %gs", self._vm,
                      PROVISION_TIMEOUT)
        if proc.returncode is None:
            await _terminate(proc)
            return False
        if code != 0:
            log.error("vm=%s: process-user-data failed with status %s", self._vm, code)
            return False
        return True

    async def _keep(
        self, what: str, argv: list[str], env: dict[str, str], *,
        ready: asyncio.Event | None = None, wait_socket: bool = False,
    ) -> None:
        """Run ``argv`` until stopped; restart it after a failure exit, like systemd."""
        socket_path = self._config.paths.agent_socket
        while not self._stop.is_set():
            if wait_socket:
                with contextlib.suppress(FileNotFoundError):
                    socket_path.unlink()
            log.info("vm=%s: starting %s: %s", self._vm, what, shlex.join(argv))
            try:
                proc = await asyncio.create_subprocess_exec(*argv, env=env)
            except OSError as exc:
                log.error("vm=%s: cannot start %s: %s", self._vm, what, exc)
                code: int | None = 127
            else:
                if wait_socket and ready is not None:
                    await self._await_socket(proc, socket_path, ready)
                code = await _first(proc.wait(), self._stop.wait())
                if proc.returncode is None:
                    await _terminate(proc)
                    log.info("vm=%s: %s stopped", self._vm, what)
                    return
            if code == 0:
                log.info("vm=%s: %s exited", self._vm, what)
                return
            log.error("vm=%s: %s exited with status %s; restarting in %gs", self._vm, what,
                      code, RESTART_DELAY)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RESTART_DELAY):
                    await self._stop.wait()

    async def _await_socket(
        self, proc: asyncio.subprocess.Process, path: Path, ready: asyncio.Event
    ) -> None:
        def up() -> bool:
            return path.exists()

        def settled() -> bool:
            return proc.returncode is not None or self._stop.is_set() or up()

        await poll_until(settled, AGENT_SOCKET_TIMEOUT)
        if up():
            log.info("vm=%s: agent socket %s is up", self._vm, path)
            ready.set()
        elif proc.returncode is None and not self._stop.is_set():
            log.error("vm=%s: agent socket %s did not appear in %gs", self._vm, path,
                      AGENT_SOCKET_TIMEOUT)

    def _open_notify(self) -> dict[str, str]:
        """A private sd_notify socket for the forwarder, so its READY=1 reaches the log."""
        path = self._config.paths.notify_socket
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(str(path))
        except OSError as exc:
            sock.close()
            log.warning("vm=%s: no notify socket (%s); readiness will not be logged",
                        self._vm, exc)
            return {}
        sock.setblocking(False)
        asyncio.get_running_loop().add_reader(sock.fileno(), self._read_notify, sock)
        self._notify = sock
        return {"NOTIFY_SOCKET": str(path)}

    def _read_notify(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(4096)
        except OSError:
            return
        for line in data.decode(errors="replace").splitlines():
            if line.startswith(("READY=", "STOPPING=", "STATUS=")):
                log.info("vm=%s: forwarder: %s", self._vm, line)

    def _close_notify(self) -> None:
        sock, self._notify = self._notify, None
        if sock is None:
            return
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(sock.fileno())
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            self._config.paths.notify_socket.unlink()


async def _first(*aws: Awaitable[Any]) -> int | None:
    """Wait for the first of several awaitables; cancel the others. Returns its int result."""
    _, result = await aio.first_done(*aws)
    return result if isinstance(result, int) else None


async def _terminate(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        async with asyncio.timeout(STOP_GRACE):
            await proc.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m providers.local.vm",
        description="Run one local pod VM's boot chain (used by the local provider).",
    )
    parser.add_argument("--dir", required=True, help="the VM's directory")
    parser.add_argument("--id", required=True, help="the instance id (for logs)")
    parser.add_argument("--listen", required=True, help="forwarder listen address host:port")
    parser.add_argument("--pod-netns", required=True, help="path of the VM's pod namespace")
    parser.add_argument("--process-user-data", required=True, help="executable")
    parser.add_argument("--forwarder", required=True, help="executable")
    parser.add_argument("--agent-command", default="", help="agent command line ({socket})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = VmConfig(
        paths=VmPaths(Path(args.dir)),
        instance_id=args.id,
        listen=args.listen,
        pod_netns=args.pod_netns,
        process_user_data=args.process_user_data,
        forwarder=args.forwarder,
        agent_command=args.agent_command,
    )
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr,
        format="%(asctime)s %(levelname)s [%(name)s] %(message)s",
    )
    return asyncio.run(VmSupervisor(config, os.environ).run())


if __name__ == "__main__":
    sys.exit(main())
