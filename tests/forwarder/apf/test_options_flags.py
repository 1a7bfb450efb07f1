"""Every flag of agent-protocol-forwarder, in every spelling it accepts (Go's ``flag``)."""

from __future__ import annotations

import pytest

from forwarder.apf.options import Options, UsageError, parse_options

STRING_FLAGS = {
    "config": ("config_path", "/etc/apf.json", "/etc/apf.json"),
    "kata-agent-socket": ("kata_agent_socket", "/a.sock", "/a.sock"),
    "pod-namespace": ("pod_namespace", "/run/netns/x", "/run/netns/x"),
    "host-interface": ("host_interface", "eth1", "eth1"),
    "ca-cert-file": ("ca_cert_file", "/ca.crt", "/ca.crt"),
    "cert-file": ("cert_file", "/tls.crt", "/tls.crt"),
    "cert-key": ("cert_key", "/tls.key", "/tls.key"),
}
BOOL_FLAGS = {
    "tls-skip-verify": "tls_skip_verify",
    "disable-tls": "disable_tls",
    "version": "show_version",
}
TRUE_WORDS = ("1", "t", "T", "true", "TRUE", "True")
FALSE_WORDS = ("0", "f", "F", "false", "FALSE", "False")


def _spellings(name: str, value: str) -> list[list[str]]:
    return [[f"-{name}", value], [f"-{name}={value}"], [f"--{name}", value],
            [f"--{name}={value}"]]


@pytest.mark.parametrize("name", sorted(STRING_FLAGS))
def test_string_flags(name: str) -> None:
    field, value, expected = STRING_FLAGS[name]
    for argv in _spellings(name, value):
        options, wants_help = parse_options(argv)
        assert not wants_help
        assert getattr(options, field) == expected, argv


def test_listen_flag() -> None:
    for argv in _spellings("listen", "127.0.0.1:9000"):
        options = parse_options(argv)[0]
        assert (options.listen_host, options.listen_port) == ("127.0.0.1", 9000)
    options = parse_options(["-listen", "[::1]:15150"])[0]
    assert (options.listen_host, options.listen_addr) == ("::1", "[::1]:15150")
    assert parse_options(["-listen=:80"])[0].listen_addr == "0.0.0.0:80"


@pytest.mark.parametrize("name", sorted(BOOL_FLAGS))
def test_bool_flags(name: str) -> None:
    field = BOOL_FLAGS[name]
    assert getattr(parse_options([])[0], field) is False
    for argv in ([f"-{name}"], [f"--{name}"]):
        assert getattr(parse_options(argv)[0], field) is True, argv
    for word in TRUE_WORDS:
        assert getattr(parse_options([f"-{name}={word}"])[0], field) is True, word
        assert getattr(parse_options([f"--{name}={word}"])[0], field) is True, word
    for word in FALSE_WORDS:
        assert getattr(parse_options([f"-{name}={word}"])[0], field) is False, word
    # one rule with the adaptor: a boolean word may follow a bare boolean flag
    assert getattr(parse_options([f"-{name}", "false"])[0], field) is False
    assert getattr(parse_options([f"-{name}", "true"])[0], field) is True


def test_every_flag_is_pinned() -> None:
    """A new flag must be added to this file's tables too."""
    from forwarder.apf.options import usage

    names = {line.split()[0].lstrip("-") for line in usage().splitlines()
             if line.startswith("  -")}
    assert names == set(STRING_FLAGS) | set(BOOL_FLAGS) | {"listen"}


def test_help_and_the_end_of_flags() -> None:
    for flag in ("-h", "-help", "--help", "--h"):
        assert parse_options([flag])[1], flag
    options, wants_help = parse_options(["-config", "/a", "--"])
    assert options.config_path == "/a" and not wants_help
    with pytest.raises(UsageError, match="unexpected argument '-config'"):
        parse_options(["--", "-config", "/b"])
    assert parse_options(["-config", "-listen"])[0].config_path == "-listen"


def test_later_flags_win() -> None:
    assert parse_options(["-config", "/a", "-config=/b"])[0].config_path == "/b"
    assert parse_options(["-disable-tls", "-disable-tls=false"])[0].disable_tls is False


@pytest.mark.parametrize(("argv", "message"), [
    (["-nope"], "flag provided but not defined: -nope"),
    (["--nope=1"], "flag provided but not defined: -nope"),
    (["---config", "x"], "flag provided but not defined"),
    (["-config"], "flag needs an argument: -config"),
    (["--cert-key"], "flag needs an argument: -cert-key"),
    (["-disable-tls=maybe"], "invalid boolean value"),
    (["-version=yes please"], "invalid boolean value"),
    (["extra"], "unexpected argument 'extra'"),
    (["-config", "/a", "extra"], "unexpected argument 'extra'"),
])
def test_rejected_command_lines(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_options(argv)


def test_the_defaults_are_upstreams() -> None:
    assert parse_options([]) == (Options(), False)
