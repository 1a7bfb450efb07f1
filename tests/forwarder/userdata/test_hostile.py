"""Hostile user-data and metadata: each attack is refused, fails closed, leaves nothing behind."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from forwarder.userdata.config import ProvisionConfig
from forwarder.userdata.errors import ProvisionError
from forwarder.userdata.provision import provision_files
from forwarder.userdata.sources import AwsSource
from protocols import initdata
from protocols.userdata import (
    AA_TOML_PATH,
    APF_JSON_PATH,
    CDH_TOML_PATH,
    INITDATA_PATH,
    POLICY_REGO_PATH,
    WriteFile,
    render,
)
from tests.forwarder.userdata.conftest import UNUSED_URL, Serve, with_cidata

APF = '{"pod-name": "nginx"}\n'
EVIL_AA = "[token_configs.kbs]\nurl = 'http://kbs.attacker.example'\n"
# Initdata without aa.toml: the case in which a user-data aa.toml used to be taken.
CDH_ONLY = b"""algorithm = "sha256"
version = "0.1.0"

[data]
"cdh.toml" = '''
[kbc]
name = 'cc_kbc'
url = 'http://kbs.example:8080'
'''
"""


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


# ------------------------------------------------------------------ item 1: KBS configuration


async def test_kbs_config_in_user_data_is_refused(
    config: ProvisionConfig, caplog: pytest.LogCaptureFixture
) -> None:
    config = with_cidata(config, render([
        WriteFile(APF_JSON_PATH, APF),
        WriteFile(INITDATA_PATH, initdata.encode(CDH_ONLY)),
        WriteFile(AA_TOML_PATH, EVIL_AA),
        WriteFile(CDH_TOML_PATH, "[kbc]\nurl = 'http://kbs.attacker.example'\n"),
        WriteFile(POLICY_REGO_PATH, "package agent_policy\ndefault allow := true\n"),
    ]))
    caplog.set_level(logging.WARNING)

    result = await provision_files(config)

    root = config.peerpod_dir
    assert list(result.refused) == [AA_TOML_PATH, CDH_TOML_PATH, POLICY_REGO_PATH]
    assert not (root / "aa.toml").exists()
    assert "attacker" not in (root / "cdh.toml").read_text()
    assert not (root / "policy.rego").exists()
    assert _tree(root) == {"apf.json", "initdata", "cdh.toml", "initdata.digest"}
    refusals = [r.getMessage() for r in caplog.records if "only from initdata" in r.getMessage()]
    assert len(refusals) == 3
    assert "'/run/peerpod/aa.toml'" in refusals[0]


async def test_stale_kbs_config_is_removed_before_provisioning(
    config: ProvisionConfig,
) -> None:
    root = config.peerpod_dir
    root.mkdir(parents=True)
    for name in ("aa.toml", "policy.rego", "initdata.digest"):
        (root / name).write_text(EVIL_AA)
    config = with_cidata(config, render([
        WriteFile(APF_JSON_PATH, APF), WriteFile(INITDATA_PATH, initdata.encode(CDH_ONLY)),
    ]))

    await provision_files(config)

    assert not (root / "aa.toml").exists()
    assert not (root / "policy.rego").exists()
    assert (root / "initdata.digest").read_text() != EVIL_AA


async def test_stale_kbs_config_is_removed_even_when_provisioning_fails(
    config: ProvisionConfig,
) -> None:
    root = config.peerpod_dir
    root.mkdir(parents=True)
    (root / "aa.toml").write_text(EVIL_AA)
    config = replace(with_cidata(config, "#cloud-config\n" + "[" * 1000), fetch_timeout=0.3)
    with pytest.raises(ProvisionError):
        await provision_files(config)
    assert _tree(root) == set()


# ------------------------------------------------------------------ item 9: robustness


def _run_cli(tmp_path: Path, timeout: str) -> tuple[subprocess.CompletedProcess[str], float]:
    (tmp_path / "dmi").mkdir(exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PUD_PEERPOD_DIR": str(tmp_path / "peerpod"),
        "PUD_CIDATA_DIR": str(tmp_path / "cidata"),
        "PUD_DMI_DIR": str(tmp_path / "dmi"),
        "PUD_AWS_IMDS_URL": UNUSED_URL,
        "PUD_AZURE_IMDS_URL": UNUSED_URL,
        "PUD_GCP_METADATA_URL": UNUSED_URL,
        "PUD_ALIBABA_METADATA_URL": UNUSED_URL,
        "PUD_TPM_DEVICE": "",
        "PUD_RETRY_DELAY": "0.1",
    }
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "forwarder.pud_main", "provision-files", "-t", timeout],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    return done, time.monotonic() - started


def _fails_closed(tmp_path: Path, done: subprocess.CompletedProcess[str], took: float) -> None:
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "provision-files failed:" in done.stderr
    # -t 1 plus interpreter start-up; far below the old hang or 180 s default.
    assert took < 15, took
    assert _tree(tmp_path / "peerpod") == set()


def test_deep_yaml_nesting_fails_closed(tmp_path: Path) -> None:
    (tmp_path / "cidata").mkdir()
    (tmp_path / "cidata" / "user-data").write_text("#cloud-config\nwrite_files: " + "[" * 500_000)
    done, took = _run_cli(tmp_path, "1")
    _fails_closed(tmp_path, done, took)
    assert "deeper than 32 levels" in done.stderr


def test_fifo_as_user_data_fails_closed(tmp_path: Path) -> None:
    (tmp_path / "cidata").mkdir()
    os.mkfifo(tmp_path / "cidata" / "user-data")
    done, took = _run_cli(tmp_path, "1")
    _fails_closed(tmp_path, done, took)
    assert "not a regular file" in done.stderr


def test_refused_allow_listed_file_exits_non_zero(tmp_path: Path) -> None:
    (tmp_path / "cidata").mkdir()
    (tmp_path / "cidata" / "user-data").write_text(render([
        WriteFile(APF_JSON_PATH, APF), WriteFile(INITDATA_PATH, initdata.encode(CDH_ONLY)),
    ]))
    peerpod = tmp_path / "peerpod"
    peerpod.mkdir()
    outside = tmp_path / "outside"
    outside.write_text("keep")
    (peerpod / "apf.json").symlink_to(outside)
    done, _ = _run_cli(tmp_path, "5")
    assert done.returncode == 1, done.stderr
    assert "apf.json is a symlink" in done.stderr
    assert outside.read_text() == "keep"
    assert _tree(peerpod) == {"apf.json"}  # the planted link, nothing of this run


async def test_initdata_failure_leaves_no_files(config: ProvisionConfig) -> None:
    config = with_cidata(config, render([
        WriteFile(APF_JSON_PATH, APF),
        WriteFile(INITDATA_PATH, initdata.encode(b'algorithm = "md5"\nversion = "0.1.0"\n')),
    ]))
    with pytest.raises(ProvisionError, match="not supported"):
        await provision_files(config)
    assert _tree(config.peerpod_dir) == set()


async def test_fifo_at_initdata_fails_without_blocking(config: ProvisionConfig) -> None:
    config.peerpod_dir.mkdir(parents=True)
    os.mkfifo(config.peerpod_dir / "initdata")
    with pytest.raises(ProvisionError, match="not a regular file"):
        await provision_files(config)
    assert _tree(config.peerpod_dir) == {"initdata"}


async def test_huge_imdsv2_token_is_not_read_whole(serve: Serve) -> None:
    total = 150 * 1024 * 1024
    sent = 0
    seen_tokens: list[str | None] = []

    async def token(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        response = web.StreamResponse()
        response.content_length = total
        await response.prepare(request)
        chunk = b"a" * 65536
        try:
            while sent < total:
                await response.write(chunk)
                sent += len(chunk)
        except (ConnectionError, RuntimeError):
            pass  # the client hung up, as it should
        return response

    async def user_data(request: web.Request) -> web.Response:
        seen_tokens.append(request.headers.get("X-aws-ec2-metadata-token"))
        return web.Response(body=b"#cloud-config\n")

    app = web.Application()
    app.router.add_put("/latest/api/token", token)
    app.router.add_get("/latest/user-data", user_data)
    base = await serve(app)
    async with aiohttp.ClientSession() as session:
        body = await AwsSource(session, base).fetch()
    assert body == b"#cloud-config\n"
    assert seen_tokens == [None]  # fell back to IMDSv1 instead of sending 150 MB back
    assert sent < 16 * 1024 * 1024
