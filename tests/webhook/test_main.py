"""``peerpods-webhook``: settings, and the installed program serving until SIGTERM."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from runtime.settings import SettingsError
from runtime.tlsprofile import TLSProfileError
from tests.webhook.conftest import SERVER_NAME, WebhookPki
from tests.webhook.test_admission import container, pod, res, review
from webhook.__main__ import load, main
from webhook.config import WebhookSettings

ROOT = Path(__file__).resolve().parent.parent.parent


def test_defaults() -> None:
    settings, profile = load([], {})
    assert settings.target_runtime_class == "kata-remote"
    assert settings.extended_resource == "kata.peerpods.io/vm"
    assert settings.webhook_bind_address == ":9443"
    assert settings.probe_bind_address == ":8081"
    assert settings.cert_dir == "/tmp/k8s-webhook-server/serving-certs"
    assert (settings.cert_name, settings.key_name) == ("tls.crt", "tls.key")
    assert settings.cert_poll_interval == timedelta(seconds=10)
    assert not profile.is_set


def test_upstream_arguments_are_accepted() -> None:
    settings, _ = load(["--leader-elect", "--health-probe-bind-address=:8081",
                        "--metrics-bind-address=:8443"], {})
    assert settings.leader_elect and settings.metrics_bind_address == ":8443"


def test_env_settings() -> None:
    settings, profile = load([], {"TARGET_RUNTIMECLASS": "rc", "POD_VM_EXTENDED_RESOURCE": "x/y",
                                  "TLS_MIN_VERSION": "VersionTLS13"})
    assert (settings.target_runtime_class, settings.extended_resource) == ("rc", "x/y")
    assert profile.min_version == "VersionTLS13"


@pytest.mark.parametrize(("argv", "env", "error"), [
    (["-webhook-bind-address", "9443"], {}, SettingsError),
    (["-zap-log-level", "loud"], {}, SettingsError),
    (["-cert-poll-interval", "0s"], {}, SettingsError),
    (["-nope"], {}, SettingsError),
    ([], {"TLS_MIN_VERSION": "VersionTLS10"}, TLSProfileError),
    ([], {"TLS_MIN_VERSION": "VersionTLS13", "TLS_CIPHER_SUITES": "TLS_RSA_WITH_AES_128_CBC_SHA"},
     TLSProfileError),
])
def test_invalid_settings(argv: list[str], env: dict[str, str], error: type) -> None:
    with pytest.raises(error):
        load(argv, env)


def test_main_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-h"]) == 0
    assert "-cert-dir" in capsys.readouterr().err
    assert main(["-bogus"]) == 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_installed_program_serves_until_sigterm(pki: WebhookPki) -> None:
    program = shutil.which("peerpods-webhook", path=str(Path(sys.executable).parent))
    assert program is not None, "pip install -e . installs peerpods-webhook"
    port, probe = free_port(), free_port()
    args = [program, "-webhook-bind-address", f"127.0.0.1:{port}",
            "-health-probe-bind-address", f"127.0.0.1:{probe}", "-cert-dir", str(pki.cert_dir)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:  # the log line that says both listeners are up
            seen.append(line)
            if "serving /mutate-v1-pod" in line:
                break
        assert proc.poll() is None, "".join(seen)
        with urllib.request.urlopen(f"http://127.0.0.1:{probe}/readyz", timeout=10) as r:
            assert r.read() == b"ok"
        context = ssl.create_default_context(cadata=pki.ca.cert_pem)

        def post(obj: dict[str, Any]) -> dict[str, Any]:
            request = urllib.request.Request(
                f"https://{SERVER_NAME}:{port}/mutate-v1-pod", data=review(obj, uid="u"),
                headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, context=context, timeout=10) as r:
                answer: dict[str, Any] = json.loads(r.read())["response"]
            return answer
        good = post(pod([container("c", res({"cpu": "1"}))]))
        assert good["allowed"] is True and good["uid"] == "u" and "patch" in good
        forged = post(pod([container("c\nFORGED", res({"cpu": "1\nFORGED"}))]))
        assert forged["allowed"] is False and forged["status"]["code"] == 400
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stopping" in err
    assert "refused" in err and "\\nFORGED" in err  # the log line stays one line
    assert not any(line.startswith("FORGED") for line in err.splitlines())


def test_readme_settings_table_is_current() -> None:
    """README's webhook table is scripts/settings-table's rendering of WebhookSettings."""
    loader = importlib.machinery.SourceFileLoader("settings_table",
                                                  str(ROOT / "scripts" / "settings-table"))
    spec = importlib.util.spec_from_loader("settings_table", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    assert module.table(WebhookSettings) in (ROOT / "README.md").read_text()


def test_installed_program_without_certificate_exits_1(tmp_path: Path) -> None:
    program = shutil.which("peerpods-webhook", path=str(Path(sys.executable).parent))
    assert program is not None
    result = subprocess.run(
        [program, "-cert-dir", str(tmp_path), "-webhook-bind-address", "127.0.0.1:0",
         "-health-probe-bind-address", "127.0.0.1:0"],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=60)
    assert result.returncode == 1
    assert "cannot load the serving certificate" in result.stderr
