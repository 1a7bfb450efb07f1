"""A test forwarder: what a pod VM serves on <ip>:<port>, built from its user-data.

It parses the user-data the provider received (``protocols.userdata.parse``), reads
``apf.json`` from it (``protocols.apf.loads``) and serves mutual TLS with that material
(plain TCP when the file carries none), relaying ``grpc.AgentService`` and ``grpc.Health``
to a test agent's unix socket, undecoded. ``drop_connections()`` closes every connection
(as a VM reboot or network cut would) and listens again on the same address.
"""

from __future__ import annotations

import ssl

from protocols import apf, userdata
from protocols.ttrpc import CallContext, Client, Server
from runtime.tlsprofile import parse_profile, server_context


def apf_from_user_data(user_data: str | bytes) -> apf.ApfConfig:
    for item in userdata.parse(user_data):
        if item.path == userdata.APF_JSON_PATH:
            return apf.loads(item.content)
    raise ValueError("user-data carries no apf.json")


class TestForwarder:
    __test__ = False

    def __init__(self, user_data: str | bytes, host: str, port: int, agent_socket: str) -> None:
        self.config = apf_from_user_data(user_data)
        self.host = host
        self.port = port
        self.agent_socket = agent_socket
        self.connections_dropped = 0
        self._ssl = self._context(self.config)
        self._server: Server | None = None
        self._agent: Client | None = None

    @staticmethod
    def _context(config: apf.ApfConfig) -> ssl.SSLContext | None:
        if not config.tls_server_cert:
            return None
        profile = parse_profile(config.tls_min_version, config.tls_cipher_suites)
        return server_context(
            config.tls_server_cert, config.tls_server_key, config.tls_client_ca or None, profile
        )

    @property
    def tls(self) -> bool:
        return self._ssl is not None

    async def start(self) -> None:
        server = Server()
        server.register_raw("grpc.AgentService", self._relay)
        server.register_raw("grpc.Health", self._relay)
        await server.start_tcp(self.host, self.port, ssl=self._ssl)
        self._server = server

    async def _agent_client(self) -> Client:
        if self._agent is None or self._agent.closed:
            self._agent = await Client.connect_unix(self.agent_socket)
        return self._agent

    async def _relay(self, ctx: CallContext, payload: bytes) -> bytes:
        client = await self._agent_client()
        return await client.call_raw(
            ctx.service, ctx.method, payload,
            timeout_nano=ctx.remaining_nano(), metadata=ctx.metadata,
        )

    async def drop_connections(self) -> None:
        """Close all client connections, then listen again."""
        await self.stop()
        self.connections_dropped += 1
        await self.start()

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown(grace=0)
        agent, self._agent = self._agent, None
        if agent is not None:
            await agent.aclose()
