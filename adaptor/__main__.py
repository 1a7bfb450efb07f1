"""Entry point of ``cloud-api-adaptor``: parse settings, configure logging, run the daemon.

The first SIGINT/SIGTERM shuts down gracefully (pod VMs keep running); a second one exits
with status 1 at once. With ``NOTIFY_SOCKET`` set, READY=1 and STOPPING=1 are sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence

from adaptor.cli import PROG, Loader, RunCommand, TextCommand, UsageError, parse_command
from adaptor.config import AdaptorSettings
from adaptor.logformat import JsonFormatter, TextFormatter
from adaptor.network.base import WorkerNetwork
from adaptor.server import Cluster, Daemon, StartupError, prepare
from adaptor.volumes import DIRECT_VOLUMES_DIR
from k8s import presence
from providers import registry
from providers.base import ProviderError
from runtime import aio, sdnotify
from runtime.settings import describe

log = logging.getLogger("adaptor")

_HANDLER_MARK = "_peerpods_handler"


def configure_logging(log_format: str, level: str) -> None:
    """Install one stderr handler on the root logger (replacing one installed before)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)


# Cloud SDKs and HTTP stacks that log whole requests at DEBUG: request bodies carry
# user-data (with the pod VM's TLS key) and headers carry credentials. They stay at WARNING
# whatever LOG_LEVEL says.
QUIET_LIBRARIES = (
    "botocore", "boto3", "s3transfer", "urllib3", "azure", "msal", "google", "grpc",
    "requests", "aiohttp", "libvirt", "httpx2", "httpcore2", "lightkube",
)


def _notify(state: str, env: Mapping[str, str]) -> None:
    try:
        sdnotify.notify(state, environ=env)
    except sdnotify.NotifyError as exc:
        log.warning("%s", exc)


NetworkFactory = Callable[[AdaptorSettings], WorkerNetwork]


def make_cluster(command: RunCommand, node_name: str, env: Mapping[str, str]) -> Cluster | None:
    """The Kubernetes integration when access is configured (raises StartupError for an
    unreadable kubeconfig); ``None`` without access or without the ``kube`` extra. Without
    access the client library is not even imported."""
    if not presence.configured(env, command.settings.kubeconfig):
        return None
    try:
        from k8s.access import KubeError
        from k8s.cluster import from_settings
    except ImportError:
        level = logging.WARNING if command.settings.kubeconfig else logging.INFO
        log.log(level, "Kubernetes integration not installed (the 'kube' extra, lightkube): "
                "running without it")
        return None
    try:
        return from_settings(command.settings, command.provider, node_name, env)
    except KubeError as exc:
        raise StartupError(str(exc)) from None


async def run(
    command: RunCommand,
    env: Mapping[str, str],
    make_network: NetworkFactory | None = None,
    direct_volumes_dir: str = DIRECT_VOLUMES_DIR,
) -> int:
    """Run the daemon until SIGINT/SIGTERM. ``make_network`` replaces the worker network
    that ``TUNNEL_TYPE`` chooses (tests); ``direct_volumes_dir`` is Kata's direct-volume
    directory (tests point it elsewhere)."""
    settings = command.settings
    try:
        prepared = prepare(settings)
        network = make_network(settings) if make_network is not None else None
        cluster = make_cluster(command, prepared.node_name, env)
    except StartupError as exc:
        log.error("startup failed: %s", exc)
        return 1
    log.info(
        "server config: %s",
        json.dumps({"provider": command.provider, "common": describe(settings),
                    command.provider: describe(command.provider_settings)}, default=str),
    )
    try:
        provider = command.module.make_provider(
            command.provider_settings, node_name=prepared.node_name
        )
    except ProviderError as exc:
        log.error("startup failed: provider %s: %s", command.provider, exc)
        return 1
    daemon = Daemon(settings, provider, prepared=prepared, network=network, cluster=cluster,
                    direct_volumes_dir=direct_volumes_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.error("second %s: exiting now", signal.Signals(signum).name)
            os._exit(1)
        log.info("%s received: shutting down", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await daemon.start()
        _notify("READY=1", env)
        await stop.wait()
        return 0
    except (StartupError, ProviderError) as exc:
        log.error("startup failed: %s", exc)
        return 1
    finally:
        _notify("STOPPING=1", env)
        await daemon.aclose()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def main(
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    *,
    loader: Loader = registry.load,
    make_network: NetworkFactory | None = None,
    direct_volumes_dir: str = DIRECT_VOLUMES_DIR,
) -> int:
    """The command line entry point. ``loader`` maps a provider name to its package (default:
    :mod:`providers.registry`); ``make_network`` builds the worker network instead of the one
    ``TUNNEL_TYPE`` names. Both exist so that tests can run the real entry point with test
    doubles, without patching modules; so does ``direct_volumes_dir``, where the CSI drivers
    publish the pod's block volumes (upstream has no setting for it)."""
    args = sys.argv[1:] if argv is None else list(argv)
    environ = os.environ if env is None else env
    try:
        command = parse_command(args, environ, loader)
    except UsageError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        print(f"Run '{PROG} help' for usage.", file=sys.stderr)
        return 2
    if isinstance(command, TextCommand):
        if command.text:
            print(command.text, end="")
        return command.status
    configure_logging(command.settings.log_format, command.settings.log_level)
    return aio.run(run(command, environ, make_network, direct_volumes_dir))


if __name__ == "__main__":
    sys.exit(main())
