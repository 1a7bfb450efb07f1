"""Lifecycle of agent-protocol-forwarder, in upstream's order.

start: read ``apf.json`` -> build the TLS context -> set up the pod network -> listen (with
admission control of unauthenticated connections, see :mod:`forwarder.apf.listener`) ->
relay ``grpc.AgentService`` and ``grpc.Health`` frame by frame -> sd_notify ``READY=1``.
stop: stop accepting, let calls in flight finish for a short grace period, close the agent
connection, tear down the pod network.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from forwarder.apf.cloudmounts import CloudVolumeMounts
from forwarder.apf.disks import DetectPolicy
from forwarder.apf.interceptor import Interceptor
from forwarder.apf.listener import AdmissionLimits, GuardedListener, raise_nofile_limit
from forwarder.apf.options import Options
from forwarder.apf.relay import DEFAULT_DIAL_TIMEOUT, AgentRelay
from forwarder.apf.tlssetup import TLSSetupError, build_server_context
from forwarder.apf.volumes import MountCheck
from protocols.apf import ApfConfig, ApfError, PodNetwork, loads
from protocols.ttrpc.relay import RelayServer
from runtime.errors import StartupError
from runtime.sdnotify import NotifyError, notify

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 5.0


class PodNetworkHandle(Protocol):
    async def teardown(self) -> None: ...


NetworkSetup = Callable[[PodNetwork, Options], Awaitable[PodNetworkHandle]]


async def setup_pod_network(network: PodNetwork, options: Options) -> PodNetworkHandle:
    """The real pod network (``forwarder.podnetwork``), loaded only when it is needed."""
    from forwarder.podnetwork import setup_pod_network as setup

    handle: PodNetworkHandle = await setup(
        network, pod_netns=options.pod_namespace, host_interface=options.host_interface
    )
    return handle


def cloud_volume_mounts(options: Options) -> CloudVolumeMounts:
    """The pod VM's cloud volumes, with the disk detection settings of ``options``."""
    return CloudVolumeMounts(
        detect=DetectPolicy(options.disk_detect_attempts, options.disk_detect_delay))


def load_config(path: str) -> ApfConfig:
    """Read and parse ``apf.json``; a missing or malformed file is a :class:`StartupError`."""
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise StartupError(f"failed to open {path}: {exc.strerror or exc}") from None
    try:
        return loads(text)
    except ApfError as exc:
        raise StartupError(
            f"failed to decode an agent-protocol-forwarder config file: {path}: {exc}"
        ) from None


def require_mutual_tls(options: Options, config: ApfConfig) -> None:
    """Refuse a server certificate without a client CA: ``apf.json`` comes from untrusted
    user-data, and without a CA anyone who reaches the port may drive the agent. Running
    without client certificates takes an explicit flag from the image (``-disable-tls``, or
    ``-tls-skip-verify`` for TLS without client verification). Missing server certificates
    are reported by the TLS setup itself."""
    if options.disable_tls or options.tls_skip_verify:
        return
    has_server_cert = bool(options.cert_file or options.cert_key
                           or (config.tls_server_cert and config.tls_server_key))
    if has_server_cert and not (options.ca_cert_file or config.tls_client_ca):
        raise StartupError(
            "refusing to serve the agent API without mutual TLS: no client CA is configured "
            f"(tls-client-ca in {options.config_path}, or -ca-cert-file); give -disable-tls "
            "explicitly to run without TLS"
        )


class Forwarder:
    """The daemon: one listener, one relay, optionally one pod network. Not restartable."""

    def __init__(
        self,
        options: Options,
        config: ApfConfig,
        *,
        network_setup: NetworkSetup = setup_pod_network,
        dial_timeout: float = DEFAULT_DIAL_TIMEOUT,
        is_mounted: MountCheck | None = None,
        environ: dict[str, str] | None = None,
        limits: AdmissionLimits | None = None,
        cloud_volumes: CloudVolumeMounts | None = None,
    ) -> None:
        self._options = options
        self._config = config
        self._network_setup = network_setup
        self._environ = environ
        self._pod = f"{config.pod_namespace or '-'}/{config.pod_name or '-'}"
        self._relay = AgentRelay(options.kata_agent_socket, dial_timeout=dial_timeout)
        self._interceptor = Interceptor(
            self._relay, pod_netns=options.pod_namespace, pod=self._pod, is_mounted=is_mounted,
            cloud_volumes=cloud_volumes or cloud_volume_mounts(options),
        )
        self._limits = limits or AdmissionLimits()
        self._server: RelayServer | None = None
        self._listener: GuardedListener | None = None
        self._network: PodNetworkHandle | None = None
        self.address: tuple[str, int] | None = None

    @property
    def relay(self) -> AgentRelay:
        return self._relay

    @property
    def listener(self) -> GuardedListener | None:
        return self._listener

    async def start(self) -> tuple[str, int]:
        """Set everything up and serve; returns the bound (host, port)."""
        require_mutual_tls(self._options, self._config)
        try:
            context: ssl.SSLContext | None = build_server_context(self._options, self._config)
        except TLSSetupError as exc:
            raise StartupError(str(exc)) from None

        network = self._config.pod_network
        if network is not None and network.tunnel_type != "none":
            log.info("pod=%s: setting up the pod network in %s (tunnel %s)", self._pod,
                     self._options.pod_namespace, network.tunnel_type)
        if network is not None:
            try:
                self._network = await self._network_setup(network, self._options)
            except Exception as exc:  # the network layer's errors, reported once here
                raise StartupError(f"failed to set up pod network: {exc}") from exc

        try:
            server = RelayServer(self._interceptor.policy())
            log.info("pod=%s: starting agent-protocol-forwarder listener on address %s (%s)",
                     self._pod, self._options.listen_addr, "TLS" if context else "plain TCP")
            raise_nofile_limit()
            listener = GuardedListener(server, context, self._limits, label=self._pod)
            try:
                self.address = await listener.start(
                    self._options.listen_host, self._options.listen_port
                )
            except OSError as exc:
                raise StartupError(
                    f"failed to listen on {self._options.listen_addr}: {exc.strerror or exc}"
                ) from None
            self._server, self._listener = server, listener
        except BaseException:
            await self._teardown_network()
            raise

        host, port = self.address
        log.info("pod=%s: serving on %s:%d, relaying to kata-agent at %s", self._pod, host, port,
                 self._options.kata_agent_socket)
        self._notify(f"READY=1\nSTATUS=serving on {host}:{port}")
        return self.address

    async def aclose(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Stop accepting, give calls in flight ``grace`` seconds, then tear everything down."""
        self._notify("STOPPING=1")
        if self._listener is not None:
            await self._listener.aclose()
            self._listener = None
        if self._server is not None:
            log.info("pod=%s: shutting down (calls in flight get %.1fs)", self._pod, grace)
            await self._server.shutdown(grace=grace)
            self._server = None
        await self._relay.aclose()
        await self._teardown_network()
        log.info("pod=%s: agent-protocol-forwarder stopped", self._pod)

    async def _teardown_network(self) -> None:
        network, self._network = self._network, None
        if network is None:
            return
        try:
            await network.teardown()
        except Exception as exc:  # logged once; shutdown goes on
            log.error("pod=%s: failed to tear down pod network: %s", self._pod, exc)

    def _notify(self, state: str) -> None:
        try:
            notify(state, environ=self._environ)
        except NotifyError as exc:
            log.warning("pod=%s: failed to send a notification to systemd: %s", self._pod, exc)
