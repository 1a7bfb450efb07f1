"""Command line, apf.json loading and the server TLS context."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from forwarder.apf.daemon import StartupError, load_config
from forwarder.apf.options import Options, UsageError, parse_options
from forwarder.apf.tlssetup import TLSSetupError, build_server_context
from forwarder.apf_main import main
from protocols.apf import ApfConfig, loads
from runtime.tlsprofile import client_context
from tests.forwarder.apf.helpers import SERVER_NAME, Pki, issue_server_cert, make_ca


def test_defaults_are_upstreams() -> None:
    options, wants_help = parse_options([])
    assert not wants_help
    assert options == Options()
    assert options.config_path == "/run/peerpod/apf.json"
    assert options.listen_addr == "0.0.0.0:15150"
    assert options.kata_agent_socket == "/run/kata-containers/agent.sock"
    assert options.pod_namespace == "/run/netns/podns"
    assert not options.disable_tls and not options.tls_skip_verify


def test_go_and_gnu_flag_spellings() -> None:
    options, _ = parse_options([
        "-config", "/etc/apf.json", "--listen=[::1]:1234", "-kata-agent-socket=/a.sock",
        "--pod-namespace", "/run/netns/x", "-host-interface", "eth1", "-ca-cert-file", "/ca",
        "-cert-file=/c", "-cert-key", "/k", "-tls-skip-verify", "--disable-tls=false",
    ])
    assert options == Options(
        config_path="/etc/apf.json", listen_host="::1", listen_port=1234,
        kata_agent_socket="/a.sock", pod_namespace="/run/netns/x", host_interface="eth1",
        ca_cert_file="/ca", cert_file="/c", cert_key="/k", tls_skip_verify=True,
        disable_tls=False)
    assert options.listen_addr == "[::1]:1234"
    assert parse_options(["-disable-tls"])[0].disable_tls
    assert parse_options(["-version"])[0].show_version
    assert parse_options(["-listen", ":9000"])[0].listen_host == "0.0.0.0"
    assert parse_options(["-help"])[1]


@pytest.mark.parametrize(("argv", "message"), [
    (["-nope"], "flag provided but not defined: -nope"),
    (["-config"], "flag needs an argument: -config"),
    (["-disable-tls=maybe"], "invalid boolean value"),
    (["-disable-tls", "false"], "unexpected argument 'false'"),
    (["-listen", "15150"], "missing port"),
    (["-listen", "x:99999"], "port out of range"),
    (["-listen", "::1:80"], "IPv6 hosts need brackets"),
])
def test_bad_command_lines(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_options(argv)


def test_main_usage_version_and_startup_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pki: Pki
) -> None:
    assert main(["-version"]) == 0
    assert capsys.readouterr().out.startswith("agent-protocol-forwarder version ")
    assert main(["-help"]) == 0
    assert "-kata-agent-socket string" in capsys.readouterr().err
    assert main(["-bogus"]) == 1
    assert "flag provided but not defined: -bogus" in capsys.readouterr().err

    missing = tmp_path / "absent.json"
    assert main(["-config", str(missing), "-listen", "127.0.0.1:0"]) == 1
    assert f"failed to open {missing}" in capsys.readouterr().err

    bad = tmp_path / "bad.json"
    bad.write_text('{"pod-network": 7}')
    assert main(["-config", str(bad), "-listen", "127.0.0.1:0"]) == 1
    assert "pod-network: expected an object" in capsys.readouterr().err

    no_certs = tmp_path / "plain.json"
    no_certs.write_text('{"pod-name": "p", "pod-namespace": "ns"}')
    assert main(["-config", str(no_certs), "-listen", "127.0.0.1:0"]) == 1
    assert "TLS is enabled but no server certificate" in capsys.readouterr().err


def test_load_config(tmp_path: Path, pki: Pki) -> None:
    path = tmp_path / "apf.json"
    path.write_text(pki.apf_json())
    config = load_config(str(path))
    assert config.pod_name == "nginx" and config.tls_client_ca == pki.client.cert_pem
    path.write_text("{not json")
    with pytest.raises(StartupError, match="failed to decode"):
        load_config(str(path))


def _options(**kw: object) -> Options:
    return Options(config_path="/run/peerpod/apf.json", **kw)  # type: ignore[arg-type]


def test_disable_tls_gives_plain_tcp(pki: Pki) -> None:
    assert build_server_context(_options(disable_tls=True), ApfConfig()) is None


def test_apf_json_ca_requires_client_certificates(pki: Pki) -> None:
    context = build_server_context(_options(), loads(pki.apf_json()))
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_without_ca_no_client_certificate_is_asked(pki: Pki) -> None:
    config = loads(pki.apf_json(**{"tls-client-ca": ""}))
    context = build_server_context(_options(), config)
    assert context is not None and context.verify_mode == ssl.CERT_NONE


def test_skip_verify_with_ca_is_refused(pki: Pki) -> None:
    with pytest.raises(TLSSetupError, match="insecure flag is not allowed"):
        build_server_context(_options(tls_skip_verify=True), loads(pki.apf_json()))


def test_tls_on_without_certificate_is_a_clear_error() -> None:
    with pytest.raises(TLSSetupError, match="no server certificate and key"):
        build_server_context(_options(), ApfConfig(tls_client_ca="x"))
    with pytest.raises(TLSSetupError, match="must be given together"):
        build_server_context(_options(cert_file="/c"), ApfConfig())


def test_unreadable_and_invalid_material(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(TLSSetupError, match="cannot read certificate file"):
        build_server_context(_options(cert_file=str(tmp_path / "x"), cert_key="/k"),
                             ApfConfig())
    broken = loads(pki.apf_json(**{"tls-server-cert": "garbage"}))
    with pytest.raises(TLSSetupError, match="TLS setup failed"):
        build_server_context(_options(), broken)
    with pytest.raises(TLSSetupError, match=r"TLS 1\.0 and 1\.1 are not supported"):
        build_server_context(_options(), loads(pki.apf_json(**{
            "tls-min-version": "VersionTLS11"})))


async def _handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> None:
    """A TLS handshake plus one byte each way over loopback."""
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(await reader.readexactly(1))
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    listener = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server)
    port = listener.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client, server_hostname=SERVER_NAME)
        writer.write(b"x")
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(1), 5) == b"x"
        writer.close()
    finally:
        listener.close()
        await listener.wait_closed()


async def test_flag_files_override_apf_json(tmp_path: Path, pki: Pki) -> None:
    ca, ca_key = make_ca("manual-ca")
    manual = issue_server_cert(ca, ca_key)
    (tmp_path / "tls.crt").write_text(manual.cert_pem)
    (tmp_path / "tls.key").write_text(manual.key_pem)
    (tmp_path / "ca.crt").write_text(ca.cert_pem)
    options = _options(cert_file=str(tmp_path / "tls.crt"), cert_key=str(tmp_path / "tls.key"),
                       ca_cert_file=str(tmp_path / "ca.crt"))
    server = build_server_context(options, loads(pki.apf_json()))
    assert server is not None
    # The client must now trust the manual CA, and present a cert the manual CA signed.
    client_pair = issue_server_cert(ca, ca_key, "cloud-api-adaptor", client=True)
    good = client_context(client_pair.cert_pem, client_pair.key_pem, ca.cert_pem)
    await _handshake(server, good)
    adaptor = client_context(pki.client.cert_pem, pki.client.key_pem, pki.ca.cert_pem)
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
        await _handshake(server, adaptor)


async def test_tls13_profile_from_apf_json_refuses_tls12_clients(pki: Pki) -> None:
    config = loads(pki.apf_json(**{"tls-min-version": "VersionTLS13"}))
    server = build_server_context(_options(), config)
    assert server is not None and server.minimum_version == ssl.TLSVersion.TLSv1_3
    client = client_context(pki.client.cert_pem, pki.client.key_pem, pki.ca.cert_pem)
    await _handshake(server, client)
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
        await _handshake(server, client)
