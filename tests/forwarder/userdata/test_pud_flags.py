"""Every flag and env var of process-user-data, in every spelling it accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from forwarder import pud_main
from forwarder.userdata.config import ProvisionConfig

OPTIONS = {  # flag: (field, env, raw value, parsed value)
    "peerpod-dir": ("peerpod_dir", "PUD_PEERPOD_DIR", "/p", Path("/p")),
    "cidata-dir": ("cidata_dir", "PUD_CIDATA_DIR", "/c", Path("/c")),
    "dmi-dir": ("dmi_dir", "PUD_DMI_DIR", "/d", Path("/d")),
    "aws-imds-url": ("aws_imds_url", "PUD_AWS_IMDS_URL", "http://a", "http://a"),
    "azure-imds-url": ("azure_imds_url", "PUD_AZURE_IMDS_URL", "http://z", "http://z"),
    "gcp-metadata-url": ("gcp_metadata_url", "PUD_GCP_METADATA_URL", "http://g", "http://g"),
    "alibaba-metadata-url": ("alibaba_metadata_url", "PUD_ALIBABA_METADATA_URL", "http://b",
                             "http://b"),
    "retry-delay": ("retry_delay", "PUD_RETRY_DELAY", "0.5", 0.5),
    "tpm-device": ("tpm_device", "PUD_TPM_DEVICE", "/dev/tpm9", Path("/dev/tpm9")),
    "pcrextend-command": ("pcrextend_command", "PUD_PCREXTEND_COMMAND", "/bin/x", "/bin/x"),
}


def config(argv: list[str], env: dict[str, str] | None = None) -> ProvisionConfig:
    command = pud_main.parse_command(argv, env or {})
    assert isinstance(command, ProvisionConfig), command
    return command


def exit_code(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = pud_main.main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_defaults() -> None:
    assert config(["provision-files"]) == ProvisionConfig()


@pytest.mark.parametrize("flag", sorted(OPTIONS))
def test_each_option_by_flag_and_by_env(flag: str) -> None:
    field, env, raw, value = OPTIONS[flag]
    for argv in ([f"--{flag}", raw], [f"--{flag}={raw}"]):
        assert getattr(config(["provision-files", *argv]), field) == value, argv
    assert getattr(config(["provision-files"], {env: raw}), field) == value
    # the flag wins over the env var
    other = config(["provision-files", f"--{flag}", raw], {env: "9" if "delay" in field else "x"})
    assert getattr(other, field) == value


def test_fetch_timeout_spellings() -> None:
    for argv in (["-t", "7"], ["-t=7"], ["--user-data-fetch-timeout", "7"],
                 ["--user-data-fetch-timeout=7"], ["-t", "7.5"]):
        timeout = config(["provision-files", *argv]).fetch_timeout
        assert timeout == float(argv[-1].rpartition("=")[2]), argv


def test_empty_env_values_count() -> None:
    assert config(["provision-files"], {"PUD_TPM_DEVICE": ""}).tpm_device is None
    assert config(["provision-files", "--tpm-device", ""]).tpm_device is None
    assert config(["provision-files", "--tpm-device="]).tpm_device is None


def test_version_help_and_no_command(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["-v"], ["--version"], ["provision-files", "-v"],
                 ["provision-files", "--version"]):
        code, out, _ = exit_code(argv, capsys)
        assert code == 0 and out.startswith("process-user-data version "), argv
    code, out, _ = exit_code([], capsys)
    assert code == 0 and "provision-files" in out
    for argv in (["-h"], ["--help"]):
        code, out, _ = exit_code(argv, capsys)
        assert code == 0 and "provision-files" in out, argv
    for argv in (["provision-files", "-h"], ["provision-files", "--help"]):
        code, out, _ = exit_code(argv, capsys)
        assert code == 0, argv
        for flag in OPTIONS:
            assert f"--{flag}" in out and OPTIONS[flag][1] in out, flag
        assert "-t" in out and "--user-data-fetch-timeout" in out


@pytest.mark.parametrize(("argv", "message"), [
    (["provision-files", "-t", "0"], "must be more than 0 seconds"),
    (["provision-files", "-t", "-3"], ""),
    (["provision-files", "-t", "soon"], "not a number of seconds"),
    (["provision-files", "--retry-delay", "-1"], "must not be negative"),
    (["provision-files", "--retry-delay", "x"], "not a number of seconds"),
    (["provision-files", "--no-such-flag"], ""),
    (["provision-files", "--peerpod-dir"], ""),
    (["provision-files", "extra"], ""),
    (["no-such-command"], ""),
])
def test_usage_errors_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = exit_code(argv, capsys)
    assert code == 2, argv
    assert message in err


def test_env_errors_name_the_variable(capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUD_RETRY_DELAY", "-2")
    code, _, err = exit_code(["provision-files"], capsys)
    assert code == 2 and "PUD_RETRY_DELAY: must not be negative" in err


def test_extend_pcr8_is_off_unless_asked() -> None:
    # Upstream's process-user-data has no such switch and never extends PCR 8
    # (pkg/userdata/provision.go, ProvisionFiles); the image's unit does.
    assert config(["provision-files"]).extend_pcr8 is False
    assert config(["provision-files", "--extend-pcr8"]).extend_pcr8 is True
    assert config(["provision-files", "--extend-pcr8=false"], {"PUD_EXTEND_PCR8": "1"}) \
        .extend_pcr8 is False
    assert config(["provision-files"], {"PUD_EXTEND_PCR8": "true"}).extend_pcr8 is True
    assert config(["provision-files"], {"PUD_EXTEND_PCR8": ""}).extend_pcr8 is False
