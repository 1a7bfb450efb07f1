"""``peerpod-ctrl``: deletes the pod VMs of PeerPods whose adaptor could not (see
:mod:`k8s.controller`). Run it as a Deployment of one replica with the ``peerpod-ctrl``
ServiceAccount, ``peer-pods-cm`` and ``peer-pods-secret`` loaded with ``envFrom`` (as the
adaptor's DaemonSet does): each provider is built from that environment exactly as
``cloud-api-adaptor`` builds it, for every provider this project has, GCP included.

Health on ``--health-probe-bind-address`` (default ``:8081``): ``/healthz`` (200 while the
process runs) and ``/readyz`` (200 while the PeerPod watch is open). Leader election is not
implemented: ``--leader-elect`` is accepted and ignored, so run a single replica (the
manifests use the Recreate strategy); two replicas would only repeat idempotent deletes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from aiohttp import web

from adaptor.cli import Loader, RunCommand, parse_command
from k8s.access import KubeError, detect, make_client
from k8s.controller import PeerPodController, ProviderFactory
from providers import registry
from providers.base import ConfigError, Provider
from runtime import aio
from runtime.errors import UsageError
from runtime.settings import build, flags_of, scan, setting, usage

log = logging.getLogger("peerpod-ctrl")

PROG = "peerpod-ctrl"
CTRL_NODE_NAME = "peerpod-ctrl"


@dataclass(frozen=True)
class CtrlSettings:
    TITLE: ClassVar[str] = "peerpod-ctrl settings"

    kubeconfig: str = setting(
        env="KUBECONFIG", flag="kubeconfig", default="",
        help="kubeconfig file (default: the in-cluster service account)",
    )
    health_probe_bind_address: str = setting(
        flag="health-probe-bind-address", default=":8081",
        help="address of /healthz and /readyz",
    )
    leader_elect: bool = setting(
        flag="leader-elect", default=False,
        help="accepted for compatibility with upstream's manifests; ignored (run one replica)",
    )
    metrics_bind_address: str = setting(
        flag="metrics-bind-address", default="",
        help="accepted for compatibility with upstream's manifests; no metrics are served",
    )
    log_format: str = setting(env="LOG_FORMAT", flag="log-format", default="text",
                              help="log format: text or json")
    log_level: str = setting(env="LOG_LEVEL", flag="log-level", default="info",
                             help="log level: debug, info, warning or error")


def provider_factory(env: Mapping[str, str],
                     loader: Loader | None = None) -> ProviderFactory:
    """Build a provider by name from ``env`` as ``cloud-api-adaptor <name>`` would."""

    def make(name: str) -> Provider:
        try:
            command = parse_command([name], env, loader or registry.load)
        except UsageError as exc:
            raise ConfigError(f"cloud provider {name!r}: {exc}") from None
        if not isinstance(command, RunCommand):
            raise ConfigError(f"cloud provider {name!r}: not a provider")
        provider: Provider = command.module.make_provider(command.provider_settings,
                                                          node_name=CTRL_NODE_NAME)
        return provider

    return make


def _bind(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host or "0.0.0.0", int(port)


async def serve_health(controller: PeerPodController, address: str) -> web.AppRunner:
    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_request: web.Request) -> web.Response:
        if controller.watching.is_set():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="PeerPod watch not open\n")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    host, port = _bind(address)
    await web.TCPSite(runner, host, port).start()
    return runner


async def run(settings: CtrlSettings, env: Mapping[str, str],
              stop: asyncio.Event | None = None) -> int:
    try:
        target = detect(env, settings.kubeconfig)
    except KubeError as exc:
        log.error("startup failed: %s", exc)
        return 1
    if target is None:
        log.error("startup failed: no Kubernetes access (not in a cluster, no KUBECONFIG)")
        return 1
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    client = make_client(target, field_manager=PROG)
    controller = PeerPodController(client, provider_factory(env))
    runner = await serve_health(controller, settings.health_probe_bind_address)
    log.info("%s started (%s)", PROG, target.source)
    task = asyncio.create_task(controller.run())
    try:
        await stop.wait()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await controller.aclose()
        await runner.cleanup()
        await client.close()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    log.info("%s stopped", PROG)
    return 0


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    from adaptor.__main__ import configure_logging

    environ = os.environ if env is None else env
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        parsed = scan(args, flags_of(CtrlSettings))
        if parsed.help:
            sys.stderr.write(usage(flags_of(CtrlSettings), f"Usage of {PROG}"))
            return 0
        settings = build(CtrlSettings, parsed, environ)
    except UsageError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    if settings.leader_elect:
        log.warning("--leader-elect is ignored: run a single replica")
    return aio.run(run(settings, environ))


if __name__ == "__main__":
    sys.exit(main())
