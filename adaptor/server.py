"""The adaptor daemon: provider + worker network + TLS + sandbox manager + ttrpc server.

``start()`` verifies the provider configuration when asked, loads the instance-type
catalogue, prepares the hypervisor socket (``mkdir -p``, remove a stale socket) and serves.
``aclose()`` stops serving, closes the agent proxies (pod VMs keep running) and the provider,
and removes the socket only if it is still the one this process created (a rolling update
may already have replaced it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from dataclasses import dataclass

from adaptor.cloudconfig import validate_default_initdata
from adaptor.config import LOG_FORMATS, LOG_LEVELS, AdaptorSettings
from adaptor.errors import AdaptorError, InvalidRequest
from adaptor.manager import ManagerConfig, RetryPolicy, SandboxManager
from adaptor.network.base import WorkerNetwork
from adaptor.service import HypervisorService
from adaptor.tls import AgentTLS
from protocols.tlsprofile import TLSProfileError, parse_profile
from protocols.ttrpc import Server
from providers.base import ConfigError, Provider

log = logging.getLogger(__name__)


class StartupError(AdaptorError):
    """The daemon cannot start; the message says why."""


@dataclass(frozen=True, slots=True)
class Prepared:
    """What startup derives from the settings before any I/O."""

    tls: AgentTLS
    default_initdata: str
    node_name: str


def prepare(settings: AdaptorSettings) -> Prepared:
    """Validate settings that need more than parsing; raise :class:`StartupError`."""
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
        )
    except TLSProfileError as exc:
        raise StartupError(f"TLS settings: {exc}") from None
    try:
        initdata = validate_default_initdata(settings.initdata)
    except InvalidRequest as exc:
        raise StartupError(str(exc)) from None
    if settings.disable_tls:
        log.warning("TLS is disabled: agent traffic to pod VMs is not encrypted")
    elif settings.tls_skip_verify:
        log.warning("TLS_SKIP_VERIFY is set: pod VM certificates are not verified")
    if profile.is_set:
        log.warning("TLS profile %s is baked into pod VMs at creation; existing pods keep "
                    "their old profile", profile)
    return Prepared(tls, initdata, settings.node_name or socket.gethostname())


def make_network(settings: AdaptorSettings) -> WorkerNetwork:
    from adaptor.network import make_worker_network

    try:
        return make_worker_network(
            settings.tunnel_type,
            vxlan_port=settings.vxlan_port,
            vxlan_min_id=settings.vxlan_min_id,
            host_interface=settings.host_interface or None,
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
    ) -> None:
        self.settings = settings
        self.provider = provider
        self._prepared = prepared or prepare(settings)
        self._network = network
        self._delete_retry = delete_retry or RetryPolicy()
        self._server: Server | None = None
        self._socket_inode: int | None = None
        self.manager: SandboxManager | None = None

    async def start(self) -> None:
        settings = self.settings
        if settings.cloud_config_verify:
            try:
                await self.provider.verify_config()
            except ConfigError as exc:
                raise StartupError(f"cloud config verification failed: {exc}") from None
        network = self._network or make_network(settings)
        catalogue = await self.provider.instance_types()
        self.manager = SandboxManager(
            ManagerConfig(
                pods_dir=settings.pods_dir,
                node_name=self._prepared.node_name,
                forwarder_port=settings.forwarder_port,
                proxy_timeout=settings.proxy_timeout.total_seconds(),
                enable_scratch_space=settings.enable_scratch_space,
                ext_network_via_podvm=settings.ext_network_via_podvm,
                default_initdata=self._prepared.default_initdata,
                delete_retry=self._delete_retry,
            ),
            provider=self.provider,
            network=network,
            tls=self._prepared.tls,
            catalogue=catalogue,
        )
        server = Server()
        HypervisorService(self.manager).register(server)
        path = settings.socket
        try:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            await server.start_unix(path)
            self._socket_inode = os.stat(path).st_ino
        except OSError as exc:
            await server.shutdown(grace=0)
            raise StartupError(f"cannot listen on {path}: {exc}") from None
        self._server = server
        log.info("server started on %s (node %s)", path, self._prepared.node_name)

    async def aclose(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown(grace=5.0)
        if self.manager is not None:
            await self.manager.aclose()
        await self.provider.aclose()
        if self._socket_inode is not None:
            with contextlib.suppress(OSError):
                if os.stat(self.settings.socket).st_ino == self._socket_inode:
                    os.unlink(self.settings.socket)
            self._socket_inode = None
        log.info("server stopped")

    async def __aenter__(self) -> Daemon:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
