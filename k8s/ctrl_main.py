"""``peerpod-ctrl``: deletes the pod VMs of PeerPods whose adaptor could not (see
:mod:`k8s.controller`). Run it as a Deployment with the ``peerpod-ctrl`` ServiceAccount,
``peer-pods-cm`` and ``peer-pods-secret`` loaded with ``envFrom`` (as the adaptor's DaemonSet
does): each provider is built from that environment exactly as ``cloud-api-adaptor`` builds
it, for every provider this project has, GCP included.

With ``--leader-elect`` (as upstream's manifests run it) only the holder of the Lease
``33f6c5d6.confidentialcontainers.org`` in the service account's namespace reconciles
(:mod:`k8s.leader`); the others wait. Losing the Lease ends the process with status 1, as
controller-runtime's manager does, so that Kubernetes restarts it as a candidate. A clean
shutdown (SIGTERM) stops reconciling, then releases the Lease. Without the flag the
controller reconciles at once, alone.

Health on ``--health-probe-bind-address`` (default ``:8081``): ``/healthz`` (200 while the
process runs, waiting to lead or not) and ``/readyz`` (200 while the PeerPod watch is open,
so a candidate waiting to lead answers 503).
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
from k8s.leader import (
    DEFAULT_TIMING,
    NO_NAMESPACE,
    LeaderElector,
    Timing,
    new_identity,
    run_elected,
)
from k8s.presence import SERVICE_ACCOUNT_DIR, in_cluster_namespace
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
        help="enable leader election: only the holder of the Lease reconciles, so that "
             "replicas can stand by",
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


async def _reconcile(controller: PeerPodController, elector: LeaderElector | None,
                     stop: asyncio.Event) -> bool:
    """Reconcile (while leading, with an elector) until ``stop``; False if the lease was
    lost. The controller has stopped when this returns."""
    try:
        if elector is not None:
            return await run_elected(elector, controller.run, stop)
        task = asyncio.create_task(controller.run())
        try:
            await stop.wait()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return True
    finally:
        await controller.aclose()


async def run(settings: CtrlSettings, env: Mapping[str, str],
              stop: asyncio.Event | None = None, *, timing: Timing = DEFAULT_TIMING,
              service_account_dir: str = SERVICE_ACCOUNT_DIR) -> int:
    try:
        target = detect(env, settings.kubeconfig)
    except KubeError as exc:
        log.error("startup failed: %s", exc)
        return 1
    if target is None:
        log.error("startup failed: no Kubernetes access (not in a cluster, no KUBECONFIG)")
        return 1
    namespace = in_cluster_namespace(service_account_dir) if settings.leader_elect else ""
    if namespace is None:
        log.error("startup failed: %s", NO_NAMESPACE)
        return 1
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    client = make_client(target, field_manager=PROG)
    controller = PeerPodController(client, provider_factory(env))
    elector = None
    if namespace:  # its own client: requests time out as client-go's leader election's do
        elector = LeaderElector(
            make_client(target, field_manager=PROG, timeout=timing.request_timeout),
            namespace, identity=new_identity(), timing=timing)
    runner = await serve_health(controller, settings.health_probe_bind_address)
    log.info("%s started (%s)", PROG, target.source)
    try:
        kept = await _reconcile(controller, elector, stop)
        if elector is not None and kept:
            await elector.release()
    finally:
        await runner.cleanup()
        await client.close()
        if elector is not None:
            await elector.client.close()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    if not kept:
        log.error("leader election lost")
        return 1
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
    return aio.run(run(settings, environ))


if __name__ == "__main__":
    sys.exit(main())
