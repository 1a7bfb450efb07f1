"""The command line: settings precedence, help, version, startup failures, log output."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
from datetime import timedelta
from types import ModuleType

import pytest

from adaptor.__main__ import main
from adaptor.cli import RunCommand, TextCommand, UsageError, parse_command
from providers import fake as fake_provider


def loader(name: str) -> ModuleType:
    if name != "fake":
        raise UsageError(f"unknown cloud provider {name!r}; known: fake")
    return fake_provider


def run_command(argv: list[str], env: dict[str, str]) -> RunCommand:
    command = parse_command(argv, env, loader)
    assert isinstance(command, RunCommand)
    return command


def test_defaults_are_upstreams() -> None:
    s = run_command(["fake"], {}).settings
    assert s.socket == "/run/peerpod/hypervisor.sock"
    assert s.pods_dir == "/run/peerpod/pods"
    assert s.forwarder_port == 15150
    assert s.proxy_timeout == timedelta(minutes=5)
    assert (s.tunnel_type, s.vxlan_port, s.vxlan_min_id) == ("vxlan", 4789, 555000)
    assert s.peerpods_limit_per_node == 10 and s.probe_port == 8000
    assert not s.disable_tls and not s.tls_skip_verify and not s.cloud_config_verify


def test_env_then_flag() -> None:
    env = {"FORWARDER_PORT": "16000", "PROXY_TIMEOUT": "90s", "TLS_SKIP_VERIFY": "TRUE",
           "ENABLE_SCRATCH_SPACE": "yes", "TLS_CIPHER_SUITES": "A,B",
           "REMOTE_HYPERVISOR_ENDPOINT": "/tmp/x.sock", "FAKE_INSTANCE_TYPE": "big"}
    command = run_command(["fake"], env)
    s = command.settings
    assert s.forwarder_port == 16000
    assert s.proxy_timeout == timedelta(seconds=90)
    assert s.tls_skip_verify is True
    assert s.enable_scratch_space is False  # upstream: only 1 or true
    assert s.tls_cipher_suites == ("A", "B")
    assert s.socket == "/tmp/x.sock"
    assert command.provider_settings.instance_type == "big"
    s2 = run_command(["fake", "-forwarder-port", "17000", "--proxy-timeout=1h30m",
                      "-disable-tls", "-socket=/tmp/y.sock", "-fake-instance-type", "tiny"],
                     env)
    assert s2.settings.forwarder_port == 17000
    assert s2.settings.proxy_timeout == timedelta(hours=1, minutes=30)
    assert s2.settings.disable_tls is True
    assert s2.settings.socket == "/tmp/y.sock"
    assert s2.provider_settings.instance_type == "tiny"


def test_cloud_provider_env_and_errors() -> None:
    assert run_command(["-pods-dir", "/p"], {"CLOUD_PROVIDER": "fake"}).provider == "fake"
    with pytest.raises(UsageError, match="CLOUD_PROVIDER is not set"):
        parse_command([], {}, loader)
    with pytest.raises(UsageError, match="unknown cloud provider 'nope'"):
        parse_command(["nope"], {}, loader)
    with pytest.raises(UsageError, match="FORWARDER_PORT: invalid integer"):
        parse_command(["fake"], {"FORWARDER_PORT": "x"}, loader)
    # An env duration Go rejects keeps the default, as upstream's DurationWithEnv does.
    kept = run_command(["fake"], {"PROXY_TIMEOUT": "5 minutes"}).settings.proxy_timeout
    assert kept == timedelta(minutes=5)
    version = parse_command(["version"], {}, loader)
    assert isinstance(version, TextCommand)


def test_help_lists_common_and_provider_settings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fake", "--help"], {}, loader=loader) == 0
    out = capsys.readouterr().out
    for text in ("-socket", "REMOTE_HYPERVISOR_ENDPOINT", "-forwarder-port", "PROXY_TIMEOUT",
                 "default 5m", "-disable-tls", "-vxlan-min-id", "FAKE_INSTANCE_TYPE",
                 "-fake-verify-error"):
        assert text in out, text
    assert main(["fake", "-help"], {}, loader=loader) == 0
    assert main(["help"], {}, loader=loader) == 0
    assert "usage: cloud-api-adaptor <provider>" in capsys.readouterr().out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"], {}, loader=loader) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("cloud-api-adaptor version ")
    assert lines[1].startswith("  commit: ")


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([], {}, loader=loader) == 2
    assert main(["fake", "-no-such-flag"], {}, loader=loader) == 2
    assert main(["fake"], {"FORWARDER_PORT": "x"}, loader=loader) == 2
    assert "invalid integer" in capsys.readouterr().err


def test_failed_config_verification_exits_nonzero(
    tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"FAKE_VERIFY_ERROR": "subnet subnet-123 does not exist", "LOG_FORMAT": "json",
           "FAKE_API_KEY": "s3cr3t-value", "TUNNEL_TYPE": "none"}
    sock = f"{tmp_path}/hv.sock"
    assert main(["fake", "-cloud-config-verify", "-socket", sock], env, loader=loader) == 1
    err = capsys.readouterr().err
    assert "cloud config verification failed: subnet subnet-123 does not exist" in err
    assert "s3cr3t-value" not in err
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert any('"api_key": "***"' in entry["msg"] for entry in lines)
    assert not os.path.exists(sock)


def test_bad_tls_profile_is_a_startup_error(capsys: pytest.CaptureFixture[str]) -> None:
    env = {"TLS_MIN_VERSION": "VersionTLS13",
           "TLS_CIPHER_SUITES": "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"}
    assert main(["fake"], env, loader=loader) == 1
    assert "cipherSuites may not be specified" in capsys.readouterr().err


def test_runs_until_sigterm(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    sock = f"{tmp_path}/hv.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(f"{tmp_path}/notify.sock")
    notify.settimeout(20)
    ready: list[bytes] = []

    def stop_when_ready() -> None:
        try:
            ready.append(notify.recv(4096))  # sd_notify READY=1: serving
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=stop_when_ready)
    thread.start()
    env = {"TUNNEL_TYPE": "none", "PODS_DIR": f"{tmp_path}/pods", "PROBE_PORT": "0",
           "NOTIFY_SOCKET": f"{tmp_path}/notify.sock"}
    try:
        assert main(["fake", "-socket", sock], env, loader=loader) == 0
    finally:
        thread.join()
        notify.close()
    assert ready == [b"READY=1"]
    err = capsys.readouterr().err
    assert "server started" in err and "SIGTERM received" in err
    assert not os.path.exists(sock)  # removed: it was still ours


@pytest.mark.parametrize(("argv", "expected"), [
    (["-disable-tls"], True), (["--disable-tls"], True), (["-disable-tls=false"], False),
    (["-disable-tls=true"], True), (["-disable-tls", "false"], False),
    (["-disable-tls", "true"], True), (["-disable-tls=yes"], True), (["-disable-tls=off"], False),
    (["-disable-tls=T"], True), (["-disable-tls=0"], False), (["--disable-tls=FALSE"], False),
])
def test_boolean_flag_forms(argv: list[str], expected: bool) -> None:
    assert run_command(["fake", *argv], {}).settings.disable_tls is expected


def test_value_flag_forms() -> None:
    for argv in (["-pods-dir", "/p"], ["-pods-dir=/p"], ["--pods-dir", "/p"],
                 ["--pods-dir=/p"]):
        assert run_command(["fake", *argv], {}).settings.pods_dir == "/p", argv
    s = run_command(["fake", "-proxy-timeout", "90s", "-vxlan-min-id=7"], {}).settings
    assert s.proxy_timeout == timedelta(seconds=90) and s.vxlan_min_id == 7


@pytest.mark.parametrize("argv", [
    ["fake", "-disable-tls=maybe"], ["fake", "-pods-dir"], ["fake", "-proxy-timeout", "5x"],
    ["fake", "-proxy-timeout", "90"],  # Go's time.ParseDuration: missing unit
    ["fake", "extra"],
])
def test_bad_command_lines_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv, {}, loader=loader) == 2
