"""The #cloud-config user-data: upstream's exact bytes, strict parsing, exact round trips."""

from __future__ import annotations

import base64
import gzip
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols import userdata
from protocols.userdata import UserDataError, WriteFile, normalized, parse, render

PEM_KEY = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n"
    "-----END PRIVATE KEY-----\n"
)
PEM_CERT = (
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBMzCB5qADAgECAhQK/l2UQVy7Kq0SWUEXAMPLEdWQSDAFBgMrZXAwEjEQMA4G\n"
    "A1UEAwwHcG9kdm0tMTAeFw0yNjA4MjEwMDAwMDBaFw0yNzA4MjEwMDAwMDBaMBIx\n"
    "-----END CERTIFICATE-----\n"
)
# Shaped like Go's json.MarshalIndent output: no final newline, PEM newlines escaped.
APF_JSON = json.dumps(
    {
        "pod-network": {
            "podip": "10.244.0.19/24",
            "pod-hw-addr": "0e:8f:62:f3:81:ad",
            "interface": "eth0",
            "worker-node-ip": "10.224.0.4/16",
            "tunnel-type": "vxlan",
            "routes": [{"Dst": "", "GW": "10.244.0.1", "Dev": "eth0"}],
            "mtu": 1450,
            "vxlan-port": 4789,
            "vxlan-id": 555001,
        },
        "pod-namespace": "default",
        "pod-name": "nginx-866fdb5bfb-b98nw",
        "tls-server-key": PEM_KEY,
        "tls-server-cert": PEM_CERT,
        "tls-client-ca": PEM_CERT,
    },
    indent=4,
)
TOML = b'algorithm = "sha256"\nversion = "0.1.0"\n\n[data]\n"aa.toml" = \'\'\'\n\'\'\'\n'
B64_LINE = base64.b64encode(gzip.compress(TOML)).decode()


def test_render_matches_upstream_template_bytes() -> None:
    # Upstream cloudconfig_test.go TestUserData input (without its owner field); the
    # expected text follows the Go template in cloudconfig.go line by line.
    text = render([WriteFile("/123", "Hello\n"), WriteFile("/456", "Hello\nWorld\n")])
    assert text == (
        "#cloud-config\n"
        "\n"
        "write_files:\n"
        "  - path: /123\n"
        "    content: |\n"
        "      Hello\n"
        "  - path: /456\n"
        "    content: |\n"
        "      Hello\n"
        "      World\n"
    )


def test_render_empty_content_has_no_content_key() -> None:
    text = render([WriteFile(userdata.SCRATCH_SPACE_MARKER_PATH, "")])
    assert text == (
        "#cloud-config\n\nwrite_files:\n  - path: /run/peerpod/scratch-space.marker\n"
    )
    assert parse(text) == [WriteFile(userdata.SCRATCH_SPACE_MARKER_PATH, "")]


def test_render_no_files() -> None:
    assert render([]) == "#cloud-config\n"
    assert parse(render([])) == []


def test_realistic_round_trip() -> None:
    files = [
        WriteFile(userdata.APF_JSON_PATH, APF_JSON + "\n"),
        WriteFile(userdata.AUTH_JSON_PATH, '{"auths":{}}\n'),
        WriteFile(userdata.INITDATA_PATH, B64_LINE + "\n"),
        WriteFile(userdata.SCRATCH_SPACE_MARKER_PATH, ""),
        WriteFile(userdata.AA_TOML_PATH, "[token_configs.kbs]\nurl = 'http://kbs:8080'\n\n"),
    ]
    text = render(files)
    assert text.startswith("#cloud-config\n\nwrite_files:\n  - path: /run/peerpod/apf.json\n")
    got = parse(text)
    # Content ending in one newline comes back byte for byte.
    assert got[:4] == files[:4]
    # Extra final newlines are clipped to one by the YAML literal block.
    assert got[4] == WriteFile(userdata.AA_TOML_PATH, files[4].content[:-1])


def test_json_and_base64_without_final_newline_gain_one() -> None:
    got = parse(render([WriteFile("/a", APF_JSON), WriteFile("/b", B64_LINE)]))
    assert got[0].content == APF_JSON + "\n"
    assert json.loads(got[0].content) == json.loads(APF_JSON)
    assert got[1].content == B64_LINE + "\n"
    assert gzip.decompress(base64.b64decode(got[1].content)) == TOML


def test_parse_accepts_bytes_and_null_content() -> None:
    text = b"#cloud-config\nwrite_files:\n- path: /x\n  content:\n- path: /y\n"
    assert parse(text) == [WriteFile("/x", ""), WriteFile("/y", "")]
    assert parse("write_files:\n") == []
    assert parse("") == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("#cloud-config\nwrite_files: []\nruncmd: [ls]\n", r"unknown key\(s\): runcmd"),
        ("write_files:\n  - path: /a\n    owner: root:root\n", r"unknown key\(s\): owner"),
        ("write_files:\n  - path: /a\n    encoding: b64\n", r"unknown key\(s\): encoding"),
        ("hello world\n", "must be a YAML mapping with write_files, got str"),
        ("- a\n- b\n", "must be a YAML mapping with write_files, got list"),
        ("write_files: /run/peerpod/apf.json\n", "write_files must be a list, got str"),
        ("write_files:\n  - /run/peerpod/apf.json\n", r"write_files\[0\] must be a mapping"),
        ("write_files:\n  - content: x\n", r"write_files\[0\]\.path must be a non-empty string"),
        ("write_files:\n  - path: 42\n", r"path must be a non-empty string, got int"),
        ("write_files:\n  - path: /a\n    content: 42\n", "content must be a string, got int"),
        ("write_files:\n  - path: /a\n    content: [x]\n", "content must be a string, got list"),
        ("write_files:\n  - path: /a\n    content: !!binary aGk=\n", "got bytes"),
        ("write_files:\n  - path: /a\n    path: /b\n", "duplicate key 'path'"),
        ("write_files: []\nwrite_files: []\n", "duplicate key 'write_files'"),
        ("write_files:\n  - &e {path: /a}\n  - *e\n", "anchors and aliases are not allowed"),
        ("write_files: !!python/object/apply:os.system [ls]\n", "not valid YAML"),
        ("write_files:\n  - path: /a\n   content: |\n", "not valid YAML.*line 3"),
        ("write_files:\n  - {path: /a, content: \"\x07\"}\n", "U\\+0007"),
    ],
)
def test_parse_rejects(text: str, message: str) -> None:
    with pytest.raises(UserDataError, match=message):
        parse(text)


def test_parse_rejects_non_utf8() -> None:
    with pytest.raises(UserDataError, match="not UTF-8"):
        parse(b"#cloud-config\nwrite_files:\n  - path: /\xc3\x28\n")


def test_parse_rejects_oversized() -> None:
    with pytest.raises(UserDataError, match="over 1048576"):
        parse(b"#" * (userdata.MAX_USER_DATA_BYTES + 1))


def test_alias_bomb_is_refused_quickly() -> None:
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 9):
        prev = chr(ord("a") + i - 1)
        name = chr(ord("a") + i)
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    with pytest.raises(UserDataError, match="anchors and aliases"):
        parse("\n".join(lines))


def test_errors_do_not_quote_the_input() -> None:
    text = "write_files:\n  - path: /a\n    content: |\n      TOPSECRET\n   bad: [\n"
    with pytest.raises(UserDataError) as info:
        parse(text)
    assert "TOPSECRET" not in str(info.value)


@pytest.mark.parametrize(
    ("path", "content", "message"),
    [
        ("relative/path", "x", "not an absolute plain path"),
        ("/a: b", "x", "not an absolute plain path"),
        ("/a\n- path: /b", "x", "not an absolute plain path"),
        ("/a", " indented first line\n", "starts with a space"),
        ("/a", "\n  \nx\n", "starts with a space"),
        ("/a", "\tindented\n", "starts with a tab"),
        ("/a", "\n\n\tx\n", "starts with a tab"),
        ("/a", "windows\r\nline\r\n", "U\\+000D"),
        ("/a", "nel\x85", "U\\+0085"),
        ("/a", "ls\u2028", "U\\+2028"),
        ("/a", "nul\x00", "U\\+0000"),
    ],
)
def test_render_refuses_what_yaml_cannot_carry(path: str, content: str, message: str) -> None:
    with pytest.raises(UserDataError, match=message):
        render([WriteFile(path, content)])


def test_allow_lists() -> None:
    assert {
        "/run/peerpod/aa.toml",
        "/run/peerpod/cdh.toml",
        "/run/peerpod/apf.json",
        "/run/peerpod/auth.json",
        "/run/peerpod/initdata",
        "/run/peerpod/scratch-space.marker",
    } == userdata.WRITE_FILES_ALLOWED
    assert userdata.POLICY_REGO_PATH not in userdata.WRITE_FILES_ALLOWED
    assert userdata.INITDATA_DIGEST_PATH not in userdata.WRITE_FILES_ALLOWED
    assert {
        "/run/peerpod/aa.toml", "/run/peerpod/cdh.toml", "/run/peerpod/policy.rego"
    } == userdata.INITDATA_FILES_ALLOWED


_PATHS = st.from_regex(r"/[A-Za-z0-9._+@/-]{0,40}", fullmatch=True)


@given(paths=st.lists(_PATHS, max_size=4), contents=st.lists(st.text(max_size=200), max_size=4))
def test_round_trip_property(paths: list[str], contents: list[str]) -> None:
    """Whatever render accepts, parse gives back as ``normalized`` content."""
    files = [WriteFile(p, c) for p, c in zip(paths, contents, strict=False)]
    try:
        text = render(files)
    except UserDataError:
        return
    assert parse(text) == [WriteFile(f.path, normalized(f.content)) for f in files]


_LINE = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs", "Cc"), blacklist_characters="\u2028\u2029\ufeff"
    ),
    max_size=60,
).filter(lambda s: not s.startswith(" "))


@given(lines=st.lists(_LINE, min_size=1, max_size=8))
def test_text_files_render_and_round_trip(lines: list[str]) -> None:
    """Printable lines whose first line does not start with a space always round-trip."""
    content = "\n".join(lines) + "\n"
    assert parse(render([WriteFile("/f", content)])) == [WriteFile("/f", normalized(content))]
