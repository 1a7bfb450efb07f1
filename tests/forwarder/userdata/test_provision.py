"""provision-files from a config drive: allow-list, modes, symlinks, initdata, PCR 8."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from forwarder.userdata.config import ProvisionConfig
from forwarder.userdata.errors import ProvisionError
from forwarder.userdata.provision import provision_files
from protocols import initdata
from protocols.userdata import (
    APF_JSON_PATH,
    AUTH_JSON_PATH,
    INITDATA_PATH,
    SCRATCH_SPACE_MARKER_PATH,
    WriteFile,
    render,
)
from tests.forwarder.userdata.conftest import with_cidata

APF = json.dumps(
    {
        "pod-network": {"podip": "10.244.0.19/24", "vxlan-id": 555001},
        "pod-namespace": "default",
        "pod-name": "nginx",
        "tls-server-key": "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n"
        "-----END PRIVATE KEY-----\n",
    },
    indent=4,
)
AUTH = '{"auths":{"registry.example":{"auth":"dXNlcjpwYXNz"}}}\n'

TOML = b"""algorithm = "sha384"
version = "0.1.0"

[data]
"aa.toml" = '''
[token_configs.kbs]
url = 'http://127.0.0.1:8080'
'''
"cdh.toml" = '''
socket = 'unix:///run/confidential-containers/cdh.sock'
[kbc]
name = 'cc_kbc'
url = 'http://127.0.0.1:8080'
'''
"policy.rego" = '''
package agent_policy
default AllowRequestsFailingPolicy := true
'''
"agent-config.toml" = "ignored"
"../peerpod/aa.toml" = "ignored too"
"""


def _user_data(*extra: WriteFile, toml: bytes = TOML) -> str:
    return render(
        [
            WriteFile(APF_JSON_PATH, APF),
            WriteFile(AUTH_JSON_PATH, AUTH),
            WriteFile(INITDATA_PATH, initdata.encode(toml)),
            WriteFile(SCRATCH_SPACE_MARKER_PATH, ""),
            *extra,
        ]
    )


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _read(path: Path) -> str:
    return path.read_text()


def _exists(path: Path) -> bool:
    return path.exists()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


async def test_config_drive_writes_files_and_initdata(
    tmp_path: Path, config: ProvisionConfig
) -> None:
    config = with_cidata(config, _user_data())
    root = config.peerpod_dir

    result = await provision_files(config)

    assert result.source == "file"
    assert set(result.written) == {
        APF_JSON_PATH, AUTH_JSON_PATH, INITDATA_PATH, SCRATCH_SPACE_MARKER_PATH
    }
    assert result.refused == ()
    # JSON without a final newline comes back with one (YAML literal block), same document.
    assert (root / "apf.json").read_text() == APF + "\n"
    assert json.loads((root / "apf.json").read_text()) == json.loads(APF)
    assert (root / "auth.json").read_text() == AUTH
    assert (root / "scratch-space.marker").read_bytes() == b""
    assert initdata.decode((root / "initdata").read_text()) == TOML
    assert (root / "aa.toml").read_text() == "[token_configs.kbs]\nurl = 'http://127.0.0.1:8080'\n"
    assert (root / "cdh.toml").read_text().startswith("socket = 'unix:///run/confidential")
    assert (root / "policy.rego").read_text().startswith("package agent_policy\n")
    expected = hashlib.sha384(TOML).hexdigest()
    assert (root / "initdata.digest").read_text() == expected
    assert result.digest == expected
    assert not result.pcr8_extended
    # Only these files, nothing for the ignored initdata keys, no temp files left over.
    assert _tree(root) == {
        "apf.json", "auth.json", "initdata", "scratch-space.marker",
        "aa.toml", "cdh.toml", "policy.rego", "initdata.digest",
    }
    for name in _tree(root):
        assert _mode(root / name) == 0o600, name
    assert _mode(root) == 0o755


async def test_disallowed_paths_are_refused_and_nothing_escapes(
    tmp_path: Path, config: ProvisionConfig
) -> None:
    hostile = [
        WriteFile("/etc/shadow", "root::0:0:99999:7:::\n"),
        WriteFile("/run/peerpod/../x", "escape\n"),
        WriteFile("/run/peerpod/../../x", "escape\n"),
        WriteFile("/run/peerpod//apf.json", "{}\n"),
        WriteFile("/run/peerpod/./auth.json", "{}\n"),
        WriteFile("/run/peerpod/policy.rego", "package evil\n"),
        WriteFile("/run/peerpod/initdata.digest", "00\n"),
        WriteFile("/run/peerpod/sub/apf.json", "{}\n"),
        WriteFile("/run/peerpod/agent-config.toml", "x = 1\n"),
    ]
    # render() refuses a relative path, so this entry is written by hand.
    text = _user_data(*hostile) + "  - path: apf.json\n    content: |\n      {}\n"
    hostile.append(WriteFile("apf.json", "{}\n"))
    config = with_cidata(config, text)
    before = _tree(tmp_path)

    result = await provision_files(config)

    assert list(result.refused) == [f.path for f in hostile]
    created = _tree(tmp_path) - before
    assert all(p.startswith("run/peerpod/") or p in ("run", "run/peerpod") for p in created)
    assert not (tmp_path / "x").exists()
    assert not (tmp_path / "run" / "x").exists()
    assert (config.peerpod_dir / "apf.json").read_text() == APF + "\n"
    # policy.rego and the digest come from initdata only.
    assert "evil" not in (config.peerpod_dir / "policy.rego").read_text()
    assert (config.peerpod_dir / "initdata.digest").read_text() == hashlib.sha384(
        TOML
    ).hexdigest()


async def test_symlink_at_target_is_refused(tmp_path: Path, config: ProvisionConfig) -> None:
    outside = tmp_path / "outside.json"
    outside.write_text("keep me")
    config.peerpod_dir.mkdir(parents=True)
    (config.peerpod_dir / "apf.json").symlink_to(outside)
    config = with_cidata(config, _user_data())

    # An allow-listed file that cannot be written fails the step, and nothing is committed.
    with pytest.raises(ProvisionError, match=r"apf\.json is a symlink"):
        await provision_files(config)

    assert outside.read_text() == "keep me"
    assert (config.peerpod_dir / "apf.json").is_symlink()
    assert _tree(config.peerpod_dir) == {"apf.json"}


async def test_symlinked_peerpod_dir_is_refused(tmp_path: Path, config: ProvisionConfig) -> None:
    real = tmp_path / "elsewhere"
    real.mkdir()
    config.peerpod_dir.parent.mkdir(parents=True)
    config.peerpod_dir.symlink_to(real)
    config = with_cidata(config, _user_data())
    with pytest.raises(ProvisionError, match="symlink"):
        await provision_files(config)
    assert list(real.iterdir()) == []


async def test_no_initdata_writes_the_dummy(config: ProvisionConfig) -> None:
    config = with_cidata(config, render([WriteFile(APF_JSON_PATH, APF + "\n")]))

    result = await provision_files(config)

    root = config.peerpod_dir
    dummy = b'algorithm = "sha256"\nversion = "0.1.0"\n\n[data]\n"aa.toml" = \'\'\'\n\'\'\''
    assert initdata.decode((root / "initdata").read_text()) == dummy
    assert (root / "aa.toml").read_text() == ""
    assert result.digest == hashlib.sha256(dummy).hexdigest()
    assert (root / "initdata.digest").read_text() == result.digest
    assert (root / "apf.json").read_text() == APF + "\n"


@pytest.mark.parametrize(
    ("user_data", "message"),
    [
        ("#cloud-config\nwrite_files: []\nruncmd: [reboot]\n", "unknown key.*runcmd"),
        (
            "#cloud-config\nwrite_files:\n  - path: /run/peerpod/apf.json\n"
            "    permissions: '0777'\n    content: x\n",
            "unknown key.*permissions",
        ),
        ("this is not cloud-config, just words\n", "must be a YAML mapping"),
        (b"\xff\xfe#cloud-config\n", "not UTF-8"),
    ],
)
async def test_invalid_user_data_fails_with_clear_error(
    config: ProvisionConfig, user_data: str | bytes, message: str
) -> None:
    config = replace(with_cidata(config, user_data), fetch_timeout=0.3)
    with pytest.raises(ProvisionError, match=message):
        await provision_files(config)
    assert not (config.peerpod_dir / "apf.json").exists()


async def test_truncated_initdata_gzip_fails(config: ProvisionConfig) -> None:
    blob = gzip.compress(TOML)
    truncated = base64.b64encode(blob[: len(blob) // 2]).decode()
    config = with_cidata(config, render([WriteFile(INITDATA_PATH, truncated)]))
    with pytest.raises(ProvisionError, match="truncated"):
        await provision_files(config)
    assert not (config.peerpod_dir / "initdata.digest").exists()


async def test_unsupported_algorithm_fails(config: ProvisionConfig) -> None:
    toml = b'algorithm = "sha1"\nversion = "0.1.0"\n'
    config = with_cidata(config, render([WriteFile(INITDATA_PATH, initdata.encode(toml))]))
    with pytest.raises(ProvisionError, match="'sha1' is not supported"):
        await provision_files(config)


# --------------------------------------------------------------------------- PCR 8


@pytest.fixture
def fake_pcrextend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``tpm2_pcrextend`` on PATH that appends its arguments to a log file."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "pcrextend.log"
    script = bindir / "tpm2_pcrextend"
    script.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$*" >> "{log}"\n'
        'if [ -n "$FAKE_PCREXTEND_FAIL" ]; then echo "ERROR: esys failed" >&2; exit 3; fi\n'
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    return log


@pytest.fixture
def tpm_device(tmp_path: Path) -> Path:
    device = tmp_path / "tpmrm0"
    device.touch()
    return device


async def test_pcr8_extended_with_first_32_bytes_of_digest(
    config: ProvisionConfig, fake_pcrextend: Path, tpm_device: Path
) -> None:
    config = replace(with_cidata(config, _user_data()), tpm_device=tpm_device, extend_pcr8=True)

    result = await provision_files(config)

    digest = hashlib.sha384(TOML).hexdigest()
    assert result.pcr8_extended
    assert _read(fake_pcrextend) == f"8:sha256={digest[:64]}\n"

    # A second run in the same boot must not extend again.
    again = await provision_files(config)
    assert not again.pcr8_extended
    assert _read(fake_pcrextend).count("\n") == 1


async def test_pcr8_not_extended_by_default_as_upstream(
    config: ProvisionConfig, fake_pcrextend: Path, tpm_device: Path
) -> None:
    # Upstream: pkg/userdata/provision.go, ProvisionFiles writes initdata.digest and nothing
    # more; podvm/mkosi.images/system/mkosi.skeleton/usr/lib/systemd/system/
    # process-user-data.service.d/10-override.conf runs tpm2_pcrextend itself.
    assert ProvisionConfig().extend_pcr8 is False
    config = replace(with_cidata(config, _user_data()), tpm_device=tpm_device)
    assert not config.extend_pcr8
    result = await provision_files(config)
    assert not result.pcr8_extended
    assert not _exists(fake_pcrextend)
    assert (config.peerpod_dir / "initdata.digest").exists()


async def test_pcr8_skipped_without_tpm_device(
    tmp_path: Path, config: ProvisionConfig, fake_pcrextend: Path
) -> None:
    config = replace(with_cidata(config, _user_data()), tpm_device=tmp_path / "no-tpm",
                     extend_pcr8=True)
    result = await provision_files(config)
    assert not result.pcr8_extended
    assert not _exists(fake_pcrextend)


async def test_pcr8_skipped_without_command(config: ProvisionConfig, tpm_device: Path) -> None:
    config = replace(
        with_cidata(config, _user_data()),
        tpm_device=tpm_device,
        extend_pcr8=True,
        pcrextend_command="tpm2_pcrextend-does-not-exist",
    )
    result = await provision_files(config)
    assert not result.pcr8_extended


async def test_pcr8_command_failure_is_an_error(
    config: ProvisionConfig,
    fake_pcrextend: Path,
    tpm_device: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_PCREXTEND_FAIL", "1")
    config = replace(with_cidata(config, _user_data()), tpm_device=tpm_device, extend_pcr8=True)
    with pytest.raises(ProvisionError, match="exited with 3: ERROR: esys failed"):
        await provision_files(config)
    # The files were written before the extend; the digest is there for diagnosis.
    assert (config.peerpod_dir / "initdata.digest").exists()
    assert not (config.peerpod_dir / ".pcr8-extended").exists()


async def test_symlink_at_initdata_output_fails_without_following(
    tmp_path: Path, config: ProvisionConfig
) -> None:
    victim = tmp_path / "victim.rego"
    victim.write_text("keep")
    config.peerpod_dir.mkdir(parents=True)
    (config.peerpod_dir / "policy.rego").symlink_to(victim)
    config = with_cidata(config, _user_data())
    with pytest.raises(ProvisionError, match=r"policy\.rego is a symlink"):
        await provision_files(config)
    assert victim.read_text() == "keep"
    assert not (config.peerpod_dir / "initdata.digest").exists()
