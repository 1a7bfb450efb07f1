"""The adaptor daemon: provider + worker network + TLS + sandbox manager + ttrpc server,
plus the state store, the orphan sweep and the probe/metrics HTTP server.

``start()``: verify the provider configuration when asked, load the instance-type
catalogue, open the probe port (``/startup`` answers 503 until the end of this sequence),
restore the sandboxes from the store (agent sockets, VXLAN ids, interrupted StartVMs), take
the hypervisor socket (``mkdir -p``, bind with mode 0600 beside it and rename over whatever
is there: a newer adaptor takes over from an older one), then start the orphan sweep.

``aclose()``: stop accepting, let calls in flight finish (``SHUTDOWN_GRACE_PERIOD``), close
the agent proxies (pod VMs keep running, records stay), close the provider, and remove the
socket files only if they are still the ones this process bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import tempfile
from dataclasses import dataclass
from typing import Protocol

from adaptor.cloudconfig import validate_default_initdata
from adaptor.config import (
    LOG_FORMATS,
    LOG_LEVELS,
    AdaptorSettings,
    refused_by_provider,
    state_dir,
    unsupported,
)
from adaptor.errors import InvalidRequest
from adaptor.lifecycle import PodObjects
from adaptor.manager import ManagerConfig, RetryPolicy, SandboxManager
from adaptor.metrics import InstrumentedProvider, Metrics
from adaptor.network.base import WorkerNetwork
from adaptor.probe import ProbeServer
from adaptor.record import SandboxRecord
from adaptor.restore import RestoreReport, restore
from adaptor.service import HYPERVISOR_SERVICE, HypervisorService
from adaptor.store import SandboxStore
from adaptor.sweep import OrphanSweeper
from adaptor.tls import MANUAL_SERVER_NAME, AgentTLS
from adaptor.tlsstate import TLSStateError
from adaptor.volumes import DIRECT_VOLUMES_DIR
from protocols.kata import hypervisor_pb2
from protocols.ttrpc import Client, ConnectionClosed, Server, TTRPCError
from providers.base import ConfigError, InstanceTypeCatalogue, Provider
from runtime.errors import StartupError
from runtime.tlsprofile import TLSProfileError, parse_profile

log = logging.getLogger(__name__)

PROBE_HOST = "127.0.0.1"
HEALTH_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class Prepared:
    """What startup derives from the settings before any I/O."""

    tls: AgentTLS
    default_initdata: str
    node_name: str


class Cluster(Protocol):
    """The Kubernetes integration (:class:`k8s.cluster.Cluster`): started with the daemon,
    consulted by CreateVM (``auth.json``), by the sandboxes (PeerPods) and by ``/startup``."""

    @property
    def pod_objects(self) -> PodObjects: ...
    def start(self) -> None: ...
    def restored(self, records: list[SandboxRecord]) -> None: ...
    async def auth_json(self, pod_namespace: str, pod_name: str) -> str | None: ...
    async def startup_ready(self) -> tuple[bool, str]: ...
    async def aclose(self) -> None: ...


def prepare(settings: AdaptorSettings) -> Prepared:
    """Validate settings that need more than parsing; raise :class:`StartupError`."""
    refused = unsupported(settings)
    if refused is not None:
        raise StartupError(refused)
    if settings.log_format not in LOG_FORMATS:
        raise StartupError(f"LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, "
                           f"not {settings.log_format!r}")
    if settings.log_level.lower() not in LOG_LEVELS:
        raise StartupError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, "
                           f"not {settings.log_level!r}")
    if not 0 < settings.forwarder_port < 65536:
        raise StartupError(f"FORWARDER_PORT {settings.forwarder_port} is not a TCP port")
    if settings.proxy_timeout.total_seconds() <= 0:
        raise StartupError("PROXY_TIMEOUT must be positive")
    try:
        profile = parse_profile(settings.tls_min_version, settings.tls_cipher_suites)
        tls = AgentTLS(
            disabled=settings.disable_tls,
            ca_cert_file=settings.ca_cert_file,
            cert_file=settings.cert_file,
            cert_key=settings.cert_key,
            skip_verify=settings.tls_skip_verify,
            profile=profile,
            state_dir=state_dir(settings),
        )
    except TLSProfileError as exc:
        raise StartupError(f"TLS settings: {exc}") from None
    except (TLSStateError, OSError) as exc:
        raise StartupError(f"TLS state in {state_dir(settings)}: {exc}") from None
    try:
        initdata = validate_default_initdata(settings.initdata)
    except InvalidRequest as exc:
        raise StartupError(str(exc)) from None
    if settings.disable_tls:
        log.warning("TLS is disabled: agent traffic to pod VMs is not encrypted")
    elif settings.tls_skip_verify:
        log.warning("TLS_SKIP_VERIFY is set: pod VM certificates are not verified")
    elif not tls.automatic:
        log.warning("CACERT_FILE is set (manual TLS mode): every pod VM is checked against the "
                    "fixed name %s, so pod VMs cannot be told apart and a VM that takes over "
                    "another's IP is accepted; without CACERT_FILE each VM gets its own "
                    "certificate and an impostor at a reused IP is refused", MANUAL_SERVER_NAME)
    if profile.is_set:
        log.warning("TLS profile %s is baked into pod VMs at creation; existing pods keep "
                    "their old profile", profile)
    return Prepared(tls, initdata, settings.node_name or socket.gethostname())


def make_network(settings: AdaptorSettings) -> WorkerNetwork:
    from adaptor.network import make_worker_network, parse_pod_subnets

    try:
        pod_subnets = parse_pod_subnets(settings.pod_subnet_cidrs)
    except ValueError as exc:
        raise StartupError(str(exc)) from None
    try:
        return make_worker_network(
            settings.tunnel_type,
            vxlan_port=settings.vxlan_port,
            vxlan_min_id=settings.vxlan_min_id,
            host_interface=settings.host_interface or None,
            pod_subnets=pod_subnets,
            external_net_via_pod_vm=settings.ext_network_via_podvm,
        )
    except ValueError as exc:
        raise StartupError(f"TUNNEL_TYPE: {exc}") from None


class Daemon:
    def __init__(
        self,
        settings: AdaptorSettings,
        provider: Provider,
        *,
        prepared: Prepared | None = None,
        network: WorkerNetwork | None = None,
        delete_retry: RetryPolicy | None = None,
        probe_host: str = PROBE_HOST,
        direct_volumes_dir: str = DIRECT_VOLUMES_DIR,
        cluster: Cluster | None = None,
    ) -> None:
        self.settings = settings
        self._direct_volumes_dir = direct_volumes_dir
        self.metrics = Metrics()
        self.provider: Provider = InstrumentedProvider(provider, self.metrics)
        self._prepared = prepared or prepare(settings)
        self._network = network
        self._delete_retry = delete_retry or RetryPolicy()
        self._probe_host = probe_host
        self._cluster = cluster
        self._server: Server | None = None
        self._socket_id: tuple[int, int] | None = None
        self._probe: ProbeServer | None = None
        self.sweeper: OrphanSweeper | None = None
        self.store = SandboxStore(settings.pods_dir)
        self.manager: SandboxManager | None = None
        self.restored: RestoreReport | None = None
        self.started = False
        self._closed = False

    @property
    def node_name(self) -> str:
        return self._prepared.node_name

    @property
    def probe_port(self) -> int:
        return self._probe.port if self._probe is not None else 0

    def owns_socket(self) -> bool:
        """True while the hypervisor socket file is the one this process bound."""
        return self._socket_id is not None and _file_id(self.settings.socket) == self._socket_id

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.aclose()
            raise

    async def _start(self) -> None:
        settings = self.settings
        refused = refused_by_provider(settings, self.provider.name)
        if refused is not None:
            raise StartupError(refused)
        self._probe = ProbeServer(self.metrics, startup=self._startup_check,
                                  health=self._health_check)
        try:
            await self._probe.start(self._probe_host, settings.probe_port)
        except OSError as exc:
            raise StartupError(
                f"cannot listen on {self._probe_host}:{settings.probe_port} (PROBE_PORT): {exc}"
            ) from None
        if settings.cloud_config_verify:
            try:
                await self.provider.verify_config()
            except ConfigError as exc:
                raise StartupError(f"cloud config verification failed: {exc}") from None
        network = self._network or make_network(settings)
        catalogue = await self.provider.instance_types()
        manager = self.manager = self._make_manager(network, catalogue)
        self.restored = await restore(manager, self.store, network)
        server = Server()
        HypervisorService(manager, self.metrics).register(server)
        path = settings.socket
        try:
            await _listen_privately(server, path)
            self._socket_id = _file_id(path)
        except OSError as exc:
            await server.shutdown(grace=0)
            raise StartupError(f"cannot listen on {path}: {exc}") from None
        self._server = server
        if self._cluster is not None:
            self._cluster.restored(manager.records())
            self._cluster.start()
        self.sweeper = OrphanSweeper(
            self.provider, manager, self.store,
            node_name=self._prepared.node_name,
            grace=settings.orphan_grace_period,
            interval=settings.orphan_sweep_interval,
            metrics=self.metrics,
            is_owner=self.owns_socket,
        )
        self.sweeper.start()
        self.started = True
        log.info("server started on %s (node %s)", path, self._prepared.node_name)

    def _make_manager(
        self, network: WorkerNetwork, catalogue: InstanceTypeCatalogue | None
    ) -> SandboxManager:
        settings = self.settings
        manager = SandboxManager(
            ManagerConfig(
                pods_dir=settings.pods_dir,
                node_name=self._prepared.node_name,
                forwarder_port=settings.forwarder_port,
                proxy_timeout=settings.proxy_timeout.total_seconds(),
                enable_scratch_space=settings.enable_scratch_space,
                ext_network_via_podvm=settings.ext_network_via_podvm,
                default_initdata=self._prepared.default_initdata,
                direct_volumes_dir=self._direct_volumes_dir,
                delete_retry=self._delete_retry,
            ),
            provider=self.provider,
            network=network,
            tls=self._prepared.tls,
            catalogue=catalogue,
            store=self.store,
            metrics=self.metrics,
            auth_source=self._cluster.auth_json if self._cluster is not None else None,
            pod_objects=self._cluster.pod_objects if self._cluster is not None else None,
        )
        self.metrics.add_gauge("sandboxes", "sandboxes known to the adaptor, by state",
                               "state", manager.counts_by_state)
        self.metrics.add_gauge("proxy_forwarder_connections",
                               "agent proxies with a live connection to their forwarder", None,
                               manager.forwarder_connections)
        return manager

    async def _socket_answers(self) -> tuple[bool, str]:
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT):
                client = await Client.connect_unix(self.settings.socket)
                async with client:
                    await client.call(HYPERVISOR_SERVICE, "Version",
                                      hypervisor_pb2.VersionRequest(),
                                      hypervisor_pb2.VersionResponse)
        except (OSError, TimeoutError, TTRPCError, ConnectionClosed) as exc:
            return False, f"hypervisor socket does not answer: {exc or type(exc).__name__}"
        return True, "ok"

    async def _startup_check(self) -> tuple[bool, str]:
        if not self.started:
            return False, "starting: restoring sandboxes"
        ok, text = await self._socket_answers()
        if ok and self._cluster is not None:
            return await self._cluster.startup_ready()
        return ok, text

    async def _health_check(self) -> tuple[bool, str]:
        if self._server is None:
            return False, "hypervisor socket not served"
        return await self._socket_answers()

    async def aclose(self) -> None:
        """Stop serving; pod VMs keep running and their records stay. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.started = False
        if self.sweeper is not None:
            await self.sweeper.aclose()
        server, self._server = self._server, None
        owned = self.owns_socket()
        if server is not None:
            await server.shutdown(grace=self.settings.shutdown_grace_period.total_seconds())
        if self.manager is not None:
            await self.manager.aclose()
        if self._cluster is not None:
            await self._cluster.aclose()
        await self.provider.aclose()
        if owned and self.owns_socket():
            with contextlib.suppress(OSError):
                os.unlink(self.settings.socket)
        elif self._socket_id is not None:
            log.info("hypervisor socket %s now belongs to another adaptor; leaving it",
                     self.settings.socket)
        self._socket_id = None
        probe, self._probe = self._probe, None
        if probe is not None:
            await probe.aclose()
        log.info("server stopped")

    async def __aenter__(self) -> Daemon:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def _listen_privately(server: Server, path: str) -> None:
    """Serve ``path`` with mode 0600 whatever the umask: bind in a fresh private directory
    beside it, set the mode, then rename over ``path`` (a newer adaptor takes the socket over
    from an older one in one step). No one else can connect before the mode is set."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".hv-", dir=directory)
    try:
        bound = os.path.join(staging, "s")
        await server.start_unix(bound, mode=0o600)
        os.replace(bound, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(staging, "s"))
        os.rmdir(staging)


def _file_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino
