"""``guest-debug``: look at attestation from inside a pod VM.

guest-debug attest [--kbs URL] [-c aa.toml] [--cert PEM] [--tee auto|sample|tdx]
    run the RCAR handshake here and print the token's claims (never the token)
guest-debug token [--aa unix://...]
    ask the running attestation-agent for a KBS token and print its claims
guest-debug resource kbs:///<repo>/<type>/<tag> [--cdh unix://... | --kbs URL] [-o FILE]
    fetch one resource through the running CDH, or straight from the KBS
guest-debug evidence [--runtime-data TEXT] [--tee ...]
    print this TEE's evidence for the runtime data
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from guest.aa import config as aa_config
from guest.aa.agent import KBS, AttestationAgent
from guest.addr import AA_SOCKET, CDH_SOCKET, unix_path
from guest.api_server.backends import AaBackend, BackendError, CdhBackend
from guest.attesters.detect import AUTO, CHOICES, make_attester, platform_from_env
from guest.kbs.keys import DEFAULT_ALGORITHM
from guest.kbs.resource_uri import ResourceUri
from guest.kbs.token import Token
from runtime.errors import PeerPodsError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="guest-debug", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    attest = sub.add_parser("attest", help="attest to the KBS from here; print the claims")
    attest.add_argument("--kbs", help="KBS URL (default: from -c aa.toml)")
    attest.add_argument("-c", "--config-file", help="aa.toml")
    attest.add_argument("--cert", help="PEM file of the KBS HTTPS certificate")
    attest.add_argument("--tee", choices=CHOICES, default=AUTO)
    token = sub.add_parser("token", help="GetToken(kbs) from the running AA; print the claims")
    token.add_argument("--aa", default=AA_SOCKET)
    resource = sub.add_parser("resource", help="fetch one resource")
    resource.add_argument("uri")
    resource.add_argument("--cdh", default=CDH_SOCKET)
    resource.add_argument("--kbs", help="fetch straight from this KBS instead of the CDH")
    resource.add_argument("--tee", choices=CHOICES, default=AUTO)
    resource.add_argument("-o", "--output", help="write the bytes here (default: stdout)")
    evidence = sub.add_parser("evidence", help="print this TEE's evidence")
    evidence.add_argument("--runtime-data", default="")
    evidence.add_argument("--tee", choices=CHOICES, default=AUTO)
    return p


def _config(args: argparse.Namespace) -> aa_config.AaConfig:
    config_file = getattr(args, "config_file", None)
    config = aa_config.load(Path(config_file)) if config_file else aa_config.AaConfig()
    kbs = config.kbs
    url = getattr(args, "kbs", None) or (kbs.url if kbs else None)
    if not url:
        raise PeerPodsError("no KBS URL: give --kbs or -c aa.toml with [token_configs.kbs]")
    cert_file = getattr(args, "cert", None)
    cert = Path(cert_file).read_text() if cert_file else (kbs.cert if kbs else None)
    algorithm = kbs.tee_key_algorithm if kbs else DEFAULT_ALGORITHM
    return aa_config.AaConfig(kbs=aa_config.KbsTokenConfig(url, cert, algorithm))


def _claims(message: bytes) -> dict[str, Any]:
    return Token.parse(json.loads(message)["token"]).claims


async def _attest(args: argparse.Namespace) -> Any:
    agent = AttestationAgent(_config(args), make_attester(args.tee, platform_from_env(os.environ)))
    try:
        return _claims(await agent.get_token(KBS))
    finally:
        await agent.aclose()


async def _token(args: argparse.Namespace) -> Any:
    backend = AaBackend(unix_path(args.aa))
    try:
        return _claims(await backend.get_token(KBS))
    finally:
        await backend.aclose()


async def _resource(args: argparse.Namespace) -> bytes:
    if args.kbs:
        agent = AttestationAgent(
            _config(args), make_attester(args.tee, platform_from_env(os.environ))
        )
        try:
            client = await agent.kbs_client()
            return await client.get_resource(ResourceUri.parse(args.uri))
        finally:
            await agent.aclose()
    backend = CdhBackend(unix_path(args.cdh))
    try:
        return await backend.get_resource(args.uri)
    finally:
        await backend.aclose()


async def _evidence(args: argparse.Namespace) -> Any:
    attester = make_attester(args.tee, platform_from_env(os.environ))
    return {"tee": attester.tee, "evidence": await attester.evidence(args.runtime_data.encode())}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "resource":
            data = asyncio.run(_resource(args))
            if args.output:
                Path(args.output).write_bytes(data)
            else:
                sys.stdout.buffer.write(data)
            return 0
        run = {"attest": _attest, "token": _token, "evidence": _evidence}[args.command]
        print(json.dumps(asyncio.run(run(args)), indent=2))
    except (PeerPodsError, BackendError, OSError, ValueError, KeyError) as exc:
        print(f"guest-debug: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
