"""Rendered user-data reads the same in upstream's parser (Go yaml.v2 UnmarshalStrict).

A pod VM image built from upstream runs the Go ``process-user-data``; whatever we render must
give it the same files our own parser gives. Needs ``go`` and Debian's
``golang-gopkg-yaml.v2-dev`` (installed in CI); skipped without them.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from protocols import initdata, userdata
from protocols.userdata import UserDataError, WriteFile, parse, render

GOPATH = Path("/usr/share/gocode")
SOURCE = Path(__file__).parent / "goyaml" / "main.go"


@pytest.fixture(scope="module")
def go_parser(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = shutil.which("go")
    if go is None or not (GOPATH / "src" / "gopkg.in" / "yaml.v2").is_dir():
        pytest.skip("needs go and golang-gopkg-yaml.v2-dev")
    out = tmp_path_factory.mktemp("goyaml") / "parse"
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": str(GOPATH)}
    if "HOME" not in env and "GOCACHE" not in env:
        env["GOCACHE"] = str(out.parent / "cache")
    subprocess.run([go, "build", "-o", str(out), str(SOURCE)], env=env, check=True, timeout=240)
    return out


def _go_parse(binary: Path, texts: list[str]) -> list[dict[str, object]]:
    done = subprocess.run(
        [str(binary)], input=json.dumps(texts), capture_output=True, text=True, check=True,
        timeout=60,
    )
    result: list[dict[str, object]] = json.loads(done.stdout)
    return result


def _cases() -> list[list[WriteFile]]:
    toml = b'algorithm = "sha256"\nversion = "0.1.0"\n\n[data]\n"aa.toml" = \'\'\'\n\'\'\'\n'
    apf = json.dumps(
        {"pod-name": "p", "tls-server-key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END"},
        indent=4,
    )
    cases = [
        [],
        [
            WriteFile(userdata.APF_JSON_PATH, apf),
            WriteFile(userdata.AUTH_JSON_PATH, '{"auths":{}}'),
            WriteFile(userdata.INITDATA_PATH, initdata.encode(toml)),
            WriteFile(userdata.SCRATCH_SPACE_MARKER_PATH, ""),
        ],
        [WriteFile("/a", "\n"), WriteFile("/b", "x\n\n\n"), WriteFile("/c", "\n\nx\ty  \n z")],
    ]
    rng = random.Random(20260821)
    alphabet = "ab \n\t{}\"'#:-|>é[]&*!%@`,?"

    def content() -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))

    for _ in range(400):
        cases.append([WriteFile(f"/p{i}", content()) for i in range(rng.randint(1, 3))])
    return cases


def test_go_yaml_v2_reads_what_we_render(go_parser: Path) -> None:
    texts: list[str] = []
    expected: list[list[WriteFile]] = []
    for files in _cases():
        try:
            texts.append(render(files))
        except UserDataError:
            continue  # refused content is never sent
        expected.append(parse(texts[-1]))
    assert len(texts) > 300
    for text, ours, theirs in zip(texts, expected, _go_parse(go_parser, texts), strict=True):
        assert theirs["err"] == "", (text, theirs["err"])
        assert theirs["files"] == [{"path": f.path, "content": f.content} for f in ours], text


def test_go_yaml_v2_and_parse_reject_the_same_extras(go_parser: Path) -> None:
    texts = [
        "#cloud-config\nwrite_files: []\nruncmd: [ls]\n",
        "write_files:\n  - path: /a\n    owner: root:root\n",
        "write_files: []\nwrite_files: []\n",
        "hello world\n",
    ]
    for text, theirs in zip(texts, _go_parse(go_parser, texts), strict=True):
        assert theirs["err"] != "", text
        with pytest.raises(UserDataError):
            parse(text)
