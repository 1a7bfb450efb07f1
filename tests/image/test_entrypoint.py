"""image/entrypoint.sh outside the image: provider selection, the env checks, what it execs.

The reference is upstream's src/cloud-api-adaptor/entrypoint.sh (confidential-containers/
cloud-api-adaptor, v0.22): every provider it knows is covered here, either run as upstream
runs it or refused. A stub ``cloud-api-adaptor`` first on PATH records its argv, its env
and its pid (the same pid as the script's when the script ``exec``s it).
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from providers import registry

REPO = Path(__file__).resolve().parents[2]
ENTRYPOINT = REPO / "image" / "entrypoint.sh"

#: The providers upstream's entrypoint.sh dispatches on (its help_msg and if/elif chain).
UPSTREAM_PROVIDERS = ("alibabacloud", "aws", "azure", "byom", "gcp", "ibmcloud",
                      "ibmcloud-powervs", "libvirt")
#: Upstream's providers that this adaptor lacks: the script refuses them.
NOT_HERE = ("alibabacloud", "byom", "ibmcloud", "ibmcloud-powervs")

STUB = """#!/bin/sh
printf '%s\\0' "$@" > "$STUB_RECORD.argv"
env -0 > "$STUB_RECORD.env"
echo $$ > "$STUB_RECORD.pid"
"""

AWS_KEYS = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "not-a-real-key"}
AZURE = {"AZURE_CLIENT_ID": "c", "AZURE_TENANT_ID": "t", "AZURE_SUBSCRIPTION_ID": "s",
         "AZURE_RESOURCE_GROUP": "rg", "AZURE_SUBNET_ID": "/subnets/x", "AZURE_IMAGE_ID": "i"}
GCP_KEY = '{"type": "service_account", "project_id": "p"}'
GCP = {"GCP_CREDENTIALS": GCP_KEY, "GCP_PROJECT_ID": "p", "GCP_ZONE": "z",
       "PODVM_IMAGE_NAME": "podvm"}


@dataclass(frozen=True)
class Outcome:
    status: int
    stdout: str
    stderr: str
    argv: tuple[str, ...] | None  # cloud-api-adaptor's arguments; None: it never ran
    env: dict[str, str]
    exec_ed: bool  # the stub ran in the script's own process


def run(tmp_path: Path, env: dict[str, str], *args: str, path: str | None = None) -> Outcome:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    stub = bin_dir / "cloud-api-adaptor"
    stub.write_text(STUB)
    stub.chmod(0o755)
    (tmp_path / "tmp").mkdir(exist_ok=True)
    record = tmp_path / "record"
    base = {"PATH": path or f"{bin_dir}:/usr/bin:/bin", "STUB_RECORD": str(record),
            "TMPDIR": str(tmp_path / "tmp")}
    proc = subprocess.Popen(["bash", str(ENTRYPOINT), *args], env={**base, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = proc.communicate(timeout=60)
    argv_file = record.with_suffix(".argv")
    if not argv_file.exists():
        return Outcome(proc.returncode, stdout, stderr, None, {}, False)
    argv = tuple(argv_file.read_bytes().decode().split("\0")[:-1])
    pairs = (item.split("=", 1) for item in
             record.with_suffix(".env").read_bytes().decode().split("\0") if "=" in item)
    pid = int(record.with_suffix(".pid").read_text())
    return Outcome(proc.returncode, stdout, stderr, argv, dict(pairs), pid == proc.pid)


def started(outcome: Outcome, *argv: str) -> None:
    assert outcome.status == 0, outcome.stderr
    assert outcome.argv == argv
    assert outcome.exec_ed, "cloud-api-adaptor must replace the script (exec), as upstream"
    assert f"+ exec cloud-api-adaptor {' '.join(argv)}" in outcome.stderr  # set -x, as upstream


def refused(outcome: Outcome, *messages: str) -> None:
    assert outcome.status == 1
    assert outcome.argv is None, "cloud-api-adaptor must not run"
    for message in messages:
        assert message in outcome.stdout + outcome.stderr


# --- aws ------------------------------------------------------------------------------------

def test_aws_with_access_keys(tmp_path: Path) -> None:
    outcome = run(tmp_path, {"CLOUD_PROVIDER": "aws", **AWS_KEYS, "PODVM_AMI_ID": "ami-1"})
    started(outcome, "aws")
    assert outcome.env["PODVM_AMI_ID"] == "ami-1"  # the adaptor reads the rest from the env
    assert outcome.env["AWS_SECRET_ACCESS_KEY"] == AWS_KEYS["AWS_SECRET_ACCESS_KEY"]


def test_aws_with_web_identity(tmp_path: Path) -> None:
    env = {"CLOUD_PROVIDER": "aws", "AWS_ROLE_ARN": "arn:aws:iam::1:role/caa",
           "AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/secrets/eks.amazonaws.com/token"}
    started(run(tmp_path, env), "aws")


def test_aws_without_credentials(tmp_path: Path) -> None:
    refused(run(tmp_path, {"CLOUD_PROVIDER": "aws"}),
            "At least one of these must be SET: AWS_SECRET_ACCESS_KEY AWS_ROLE_ARN")


def test_aws_secret_without_key_id(tmp_path: Path) -> None:
    env = {"CLOUD_PROVIDER": "aws", "AWS_SECRET_ACCESS_KEY": "x"}
    refused(run(tmp_path, env), "$AWS_ACCESS_KEY_ID is NOT set")


def test_aws_role_without_token_file(tmp_path: Path) -> None:
    env = {"CLOUD_PROVIDER": "aws", "AWS_ROLE_ARN": "arn:aws:iam::1:role/caa"}
    refused(run(tmp_path, env), "$AWS_WEB_IDENTITY_TOKEN_FILE is NOT set")


# --- azure ----------------------------------------------------------------------------------

def test_azure(tmp_path: Path) -> None:
    started(run(tmp_path, {"CLOUD_PROVIDER": "azure", **AZURE}), "azure")


def test_azure_names_every_missing_variable(tmp_path: Path) -> None:
    env = {k: v for k, v in AZURE.items() if k not in ("AZURE_SUBNET_ID", "AZURE_IMAGE_ID")}
    refused(run(tmp_path, {"CLOUD_PROVIDER": "azure", **env}),
            "$AZURE_SUBNET_ID is NOT set", "$AZURE_IMAGE_ID is NOT set")


# --- gcp ------------------------------------------------------------------------------------

def test_gcp_writes_the_key_for_google_application_credentials(tmp_path: Path) -> None:
    outcome = run(tmp_path, {"CLOUD_PROVIDER": "gcp", **GCP})
    started(outcome, "gcp")
    creds = Path(outcome.env["GOOGLE_APPLICATION_CREDENTIALS"])
    assert creds == tmp_path / "tmp" / "gcp-creds.json"  # /tmp/gcp-creds.json in the image
    assert creds.read_text() == GCP_KEY + "\n"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert GCP_KEY not in outcome.stdout + outcome.stderr  # set -x comes after the write


def test_gcp_key_file_is_replaced_not_followed(tmp_path: Path) -> None:
    (tmp_path / "tmp").mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("keep")
    (tmp_path / "tmp" / "gcp-creds.json").symlink_to(elsewhere)
    started(run(tmp_path, {"CLOUD_PROVIDER": "gcp", **GCP}), "gcp")
    assert elsewhere.read_text() == "keep"
    assert (tmp_path / "tmp" / "gcp-creds.json").read_text() == GCP_KEY + "\n"


def test_gcp_missing_variables(tmp_path: Path) -> None:
    env = {"CLOUD_PROVIDER": "gcp", "GCP_PROJECT_ID": "p", "GCP_ZONE": "z"}
    refused(run(tmp_path, env), "$GCP_CREDENTIALS is NOT set", "$PODVM_IMAGE_NAME is NOT set")
    assert not (tmp_path / "tmp" / "gcp-creds.json").exists()


# --- libvirt and local ----------------------------------------------------------------------

def test_libvirt_passes_upstreams_data_dir(tmp_path: Path) -> None:
    env = {"CLOUD_PROVIDER": "libvirt", "LIBVIRT_URI": "qemu+ssh://root@192.0.2.1/system"}
    outcome = run(tmp_path, env)
    started(outcome, "libvirt", "-data-dir", "/opt/data-dir")
    assert outcome.env["LIBVIRT_URI"] == env["LIBVIRT_URI"]


def test_libvirt_without_uri(tmp_path: Path) -> None:
    refused(run(tmp_path, {"CLOUD_PROVIDER": "libvirt"}), "$LIBVIRT_URI is NOT set")


def test_local(tmp_path: Path) -> None:
    started(run(tmp_path, {"CLOUD_PROVIDER": "local"}), "local")


# --- selection ------------------------------------------------------------------------------

def test_the_first_argument_wins_over_cloud_provider(tmp_path: Path) -> None:
    env = {"CLOUD_PROVIDER": "aws", "LIBVIRT_URI": "test:///default"}
    started(run(tmp_path, env, "libvirt"), "libvirt", "-data-dir", "/opt/data-dir")


def test_further_arguments_are_passed_on(tmp_path: Path) -> None:
    outcome = run(tmp_path, {"LIBVIRT_URI": "test:///default"}, "libvirt", "-log-level", "debug")
    started(outcome, "libvirt", "-data-dir", "/opt/data-dir", "-log-level", "debug")


@pytest.mark.parametrize("provider", NOT_HERE)
def test_upstream_providers_this_adaptor_lacks_are_refused(tmp_path: Path, provider: str) -> None:
    # with the env upstream wants for them, so that nothing else could be the reason
    env = {"CLOUD_PROVIDER": provider, "VM_POOL_IPS": "192.0.2.10", "IBMCLOUD_API_KEY": "k",
           "ALIBABACLOUD_ACCESS_KEY_ID": "a", "INSTANCE_TYPE": "ecs.g8i.xlarge"}
    refused(run(tmp_path, env),
            f"cloud provider {provider} is upstream's, but this cloud-api-adaptor does not "
            "implement it (providers here: aws, azure, gcp, libvirt, local)")


def test_no_provider_prints_the_usage_and_fails(tmp_path: Path) -> None:
    outcome = run(tmp_path, {})
    refused(outcome, "Usage:", 'CLOUD_PROVIDER is currently set to ""')
    assert "CLOUD_PROVIDER=aws|azure|gcp|libvirt|local" in outcome.stderr


def test_an_unknown_provider_prints_the_usage_and_fails(tmp_path: Path) -> None:
    refused(run(tmp_path, {"CLOUD_PROVIDER": "vsphere"}),
            "Usage:", 'CLOUD_PROVIDER is currently set to "vsphere"')


def test_help(tmp_path: Path) -> None:
    outcome = run(tmp_path, {}, "help")
    assert (outcome.status, outcome.argv) == (0, None)
    assert "Usage:" in outcome.stdout


def test_every_upstream_provider_is_run_or_refused() -> None:
    """Each provider of upstream's script has a branch here, and the list of providers this
    script runs is the adaptor's own (a provider added to providers/ must be added here)."""
    script = ENTRYPOINT.read_text()
    here = re.search(r'^PROVIDERS="([^"]*)"', script, flags=re.MULTILINE)
    assert here is not None
    assert here.group(1).split() == registry.names()
    branches = {name for pattern in re.findall(r"^    ([a-z|-]+)\)", script, flags=re.MULTILINE)
                for name in pattern.split("|")}
    assert set(UPSTREAM_PROVIDERS) | set(registry.names()) <= branches
    assert not set(NOT_HERE) & set(registry.names())
    assert set(NOT_HERE) | set(registry.names()) >= set(UPSTREAM_PROVIDERS)


# --- with the real cloud-api-adaptor --------------------------------------------------------

@pytest.mark.parametrize("provider, env", [
    ("aws", AWS_KEYS), ("azure", AZURE), ("gcp", GCP),
    ("libvirt", {"LIBVIRT_URI": "test:///default"}), ("local", {}),
])
def test_the_adaptor_accepts_what_the_script_passes(
    tmp_path: Path, provider: str, env: dict[str, str]
) -> None:
    """The project's own cloud-api-adaptor parses the flags the script adds (an unknown flag
    would be a usage error): ``-help`` after them prints the provider's settings."""
    path = f"{Path(sys.executable).parent}:/usr/bin:/bin"
    outcome = run(tmp_path, env, provider, "-help", path=path)
    assert outcome.status == 0, outcome.stderr
    assert f"usage: cloud-api-adaptor {provider} [flags]\n" in outcome.stdout
    assert os.path.exists(tmp_path / "tmp" / "gcp-creds.json") == (provider == "gcp")
