"""Guest attestation: one resource fetch with a cold and with a warm token, and GetToken.

    .venv/bin/python benchmarks/guest_bench.py [--rounds 50] [--algorithm ECDH-ES+A256KW-P256]

Everything on loopback, in one process and one event loop: the loopback Trustee KBS of
tests/guest (sample TEE, ES256 EAR tokens, the JWE as Trustee builds it), the
attestation-agent and the confidential-data-hub ttrpc servers on unix sockets, and a ttrpc
client calling api.GetResourceService/GetResource as api-server-rest does.
Rows (p50 / p99 in ms):
- resource, cold token: the AA's token cache is emptied before each call, so the call pays
  the RCAR handshake (/auth, evidence, /attest, a fresh TEE key) plus GET + JWE decryption.
  Upstream's AA always pays this.
- resource, warm token: the AA answers from its cache; GET + JWE decryption only.
- GetToken kbs cold / warm: the AA alone.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from guest.aa import config as aa_config
from guest.aa.agent import AttestationAgent
from guest.aa.service import SERVICE, AttestationAgentService
from guest.attesters.sample import SampleAttester
from guest.cdh import config as cdh_config
from guest.cdh.hub import Hub, make_kbc
from guest.cdh.service import CdhServices
from protocols.kata import attestation_agent_pb2 as aa_pb
from protocols.kata import confidential_data_hub_pb2 as cdh_pb
from protocols.ttrpc import Client, Server
from tests.guest.kbs_server import ALLOW_ALL, KbsState, LoopbackKbs

RESOURCE = os.urandom(32)


async def timed(
    rounds: int, before: Callable[[], None], call: Callable[[], Awaitable[None]]
) -> list[float]:
    samples = []
    for _ in range(rounds):
        before()
        start = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def row(name: str, samples: list[float]) -> None:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(f"{name:<28} p50 {statistics.median(ordered):8.2f} ms   p99 {p99:8.2f} ms")


async def main(rounds: int, algorithm: str) -> None:
    kbs = LoopbackKbs(KbsState(policy=ALLOW_ALL, resources={"default/key/key1": RESOURCE}))
    await kbs.start()
    tmp = Path(tempfile.mkdtemp(prefix="guest-bench-"))
    aa_path, cdh_path = tmp / "aa.sock", tmp / "cdh.sock"
    config = aa_config.parse(
        f'[token_configs.kbs]\nurl = "{kbs.url}"\ntee_key_algorithm = "{algorithm}"\n'
    )
    agent = AttestationAgent(config, SampleAttester())
    aa_server, cdh_server = Server(), Server()
    AttestationAgentService(agent).register(aa_server)
    await aa_server.start_unix(str(aa_path))
    cdh_conf = cdh_config.parse(
        f'[kbc]\nname = "cc_kbc"\nurl = "{kbs.url}"\n[aa]\naa_socket = "unix://{aa_path}"\n'
    )
    hub = Hub(cdh_conf, make_kbc(cdh_conf, {}))
    CdhServices(hub).register(cdh_server)
    await cdh_server.start_unix(str(cdh_path))
    cdh = await Client.connect_unix(str(cdh_path))
    aa = await Client.connect_unix(str(aa_path))

    async def resource() -> None:
        reply = await cdh.call(
            "api.GetResourceService",
            "GetResource",
            cdh_pb.GetResourceRequest(ResourcePath="kbs:///default/key/key1"),
            cdh_pb.GetResourceResponse,
        )
        assert reply.Resource == RESOURCE

    async def token() -> None:
        await aa.call(
            SERVICE, "GetToken", aa_pb.GetTokenRequest(TokenType="kbs"), aa_pb.GetTokenResponse
        )

    def forget() -> None:
        client = agent._kbs
        if client is not None:
            client.token = None

    try:
        await resource()  # warm-up: connections, imports
        print(f"guest attestation on loopback, {rounds} rounds, tee key {algorithm}")
        row("resource, cold token", await timed(rounds, forget, resource))
        row("resource, warm token", await timed(rounds, lambda: None, resource))
        row("GetToken kbs, cold", await timed(rounds, forget, token))
        row("GetToken kbs, warm", await timed(rounds, lambda: None, token))
        print(f"KBS saw {kbs.state.attest_count} attestations, {kbs.state.resource_count} GETs")
    finally:
        await cdh.aclose()
        await aa.aclose()
        await cdh_server.shutdown()
        await aa_server.shutdown()
        await hub.aclose()
        await agent.aclose()
        await kbs.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--algorithm", default="ECDH-ES+A256KW-P256")
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.algorithm))
