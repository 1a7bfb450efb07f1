"""deploy/webhook-certs.sh: the certificate it makes is one the API server accepts for the
webhook Service (the webhook serves it, a client that trusts only its CA and checks the
Service's name connects), and it hands secret and caBundle to kubectl."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from runtime.settings import parse_settings
from runtime.tlsprofile import parse_profile
from tests.deploy.render import DEPLOY, WEBHOOK_NAMESPACE, only, rendered
from webhook.config import WebhookSettings
from webhook.server import WebhookServer

SCRIPT = DEPLOY / "webhook-certs.sh"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          check=True, env=env)


def service_host() -> str:
    config = only(rendered("aws"), "MutatingWebhookConfiguration",
                  "peer-pods-webhook-mutating-webhook-configuration")
    service = config["webhooks"][0]["clientConfig"]["service"]
    assert service["namespace"] == WEBHOOK_NAMESPACE
    return f"{service['name']}.{service['namespace']}.svc"


async def test_the_certificate_is_served_for_the_service_name(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    run("--out", str(out), "--days", "30")
    assert sorted(p.name for p in out.iterdir()) == ["ca.crt", "tls.crt", "tls.key"]
    assert (out / "tls.key").stat().st_mode & 0o077 == 0
    cert = x509.load_pem_x509_certificate((out / "tls.crt").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    host = service_host()
    assert names.get_values_for_type(x509.DNSName) == [host, f"{host}.cluster.local"]

    settings = parse_settings(WebhookSettings, [
        "-webhook-bind-address", "127.0.0.1:0", "-health-probe-bind-address", "127.0.0.1:0",
        "-cert-dir", str(out)], {})
    client = ssl.create_default_context(cafile=str(out / "ca.crt"))
    async with WebhookServer(settings, parse_profile()) as server:
        _, writer = await asyncio.open_connection("127.0.0.1", server.webhook_port,
                                                  ssl=client, server_hostname=host)
        writer.close()
        await writer.wait_closed()
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.open_connection("127.0.0.1", server.webhook_port, ssl=client,
                                          server_hostname="other.svc")


def test_secret_and_ca_bundle_go_to_kubectl(tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    fake = tmp_path / "kubectl"
    fake.write_text(
        "#!/usr/bin/env python3\n"
        "import json, sys\n"
        "stdin = sys.stdin.read() if '-f' in sys.argv else ''\n"
        f"open({str(log)!r}, 'a').write(json.dumps([sys.argv[1:], stdin]) + '\\n')\n"
        "if '--dry-run=client' in sys.argv: print('kind: Secret')\n")
    fake.chmod(0o755)
    run(env={"PATH": "/usr/bin:/bin", "KUBECTL": str(fake)})
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    create, apply, patch = calls
    assert create[0][:5] == ["-n", WEBHOOK_NAMESPACE, "create", "secret", "tls"]
    assert create[0][5] == "webhook-server-cert"
    assert apply == [["apply", "-f", "-"], "kind: Secret\n"]
    args = patch[0]
    assert args[:3] == ["patch", "mutatingwebhookconfiguration",
                        "peer-pods-webhook-mutating-webhook-configuration"]
    [op] = json.loads(args[args.index("-p") + 1])
    assert op["path"] == "/webhooks/0/clientConfig/caBundle"
    ca = x509.load_pem_x509_certificate(base64.b64decode(op["value"]))
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
