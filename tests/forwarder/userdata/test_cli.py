"""The process-user-data command line, run as a real process."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from protocols import initdata
from protocols.userdata import APF_JSON_PATH, WriteFile, render
from tests.forwarder.userdata.conftest import UNUSED_URL

SECRET = "-----BEGIN PRIVATE KEY-----\\nTOPSECRETKEY\\n-----END PRIVATE KEY-----\\n"
APF = '{"pod-name": "nginx", "tls-server-key": "' + SECRET + '"}\n'


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "forwarder.pud_main", *args],
        env={"PATH": os.environ.get("PATH", ""), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "dmi").mkdir(exist_ok=True)
    return {
        "PUD_PEERPOD_DIR": str(tmp_path / "peerpod"),
        "PUD_CIDATA_DIR": str(tmp_path / "cidata"),
        "PUD_DMI_DIR": str(tmp_path / "dmi"),
        "PUD_AWS_IMDS_URL": UNUSED_URL,
        "PUD_AZURE_IMDS_URL": UNUSED_URL,
        "PUD_GCP_METADATA_URL": UNUSED_URL,
        "PUD_ALIBABA_METADATA_URL": UNUSED_URL,
        "PUD_TPM_DEVICE": "",
        "PUD_RETRY_DELAY": "0.05",
    }


def test_version() -> None:
    for args in (["--version"], ["provision-files", "-v"]):
        done = _run(args, {})
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("process-user-data version ")


def test_help_documents_options_and_env() -> None:
    done = _run(["provision-files", "--help"], {})
    assert done.returncode == 0
    for text in ("--user-data-fetch-timeout", "PUD_PEERPOD_DIR", "--tpm-device", "/run/peerpod"):
        assert text in done.stdout


def test_bad_timeout_is_a_usage_error(tmp_path: Path) -> None:
    done = _run(["provision-files", "-t", "0"], _env(tmp_path))
    assert done.returncode == 2
    assert "must be more than 0 seconds" in done.stderr


def test_provision_files_from_config_drive(tmp_path: Path) -> None:
    env = _env(tmp_path)
    (tmp_path / "cidata").mkdir()
    (tmp_path / "cidata" / "user-data").write_text(render([WriteFile(APF_JSON_PATH, APF)]))

    done = _run(["provision-files", "-t", "10"], env)

    assert done.returncode == 0, done.stderr
    assert (tmp_path / "peerpod" / "apf.json").read_text() == APF
    assert (tmp_path / "peerpod" / "initdata.digest").read_text() == hashlib.sha256(
        initdata.DUMMY_TOML
    ).hexdigest()
    assert "user-data source: file" in done.stderr
    assert "TOPSECRETKEY" not in done.stderr + done.stdout


def test_flag_overrides_env_and_failure_exits_1(tmp_path: Path) -> None:
    env = _env(tmp_path)
    (tmp_path / "cidata").mkdir()
    (tmp_path / "cidata" / "user-data").write_text("#cloud-config\nbootcmd: [TOPSECRETKEY]\n")
    other = tmp_path / "other"

    done = _run(
        ["provision-files", "--user-data-fetch-timeout", "0.3", "--peerpod-dir", str(other)], env
    )

    assert done.returncode == 1
    assert "provision-files failed: no valid user-data from source file" in done.stderr
    assert "unknown key(s): bootcmd" in done.stderr
    assert "TOPSECRETKEY" not in done.stderr
    assert other.is_dir()
    assert not (tmp_path / "peerpod").exists()
