"""AWS settings: upstream names and defaults, env then flag, secrets kept out of output."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest

from providers import registry
from providers.aws import Settings, make_provider
from providers.aws.settings import AwsSettings
from runtime.settings import SettingsError, describe, parse_settings

REQUIRED = {"PODVM_AMI_ID": "ami-0abc"}


def test_defaults_follow_upstream() -> None:
    s = parse_settings(AwsSettings, [], REQUIRED)
    assert s.image_id == "ami-0abc"
    assert s.instance_type == "m6a.large"
    assert s.instance_types == ()
    assert s.launch_template_name == "kata"
    assert s.use_launch_template is False
    assert s.root_volume_size == 30
    assert s.disable_cvm is False and s.use_public_ip is False
    assert s.extra_tags == {}
    assert s.imds_url == "http://169.254.169.254"
    assert s.api_rate == 5.0
    assert s.api_timeout == timedelta(minutes=2)


def test_env_names() -> None:
    env = {
        **REQUIRED,
        "AWS_REGION": "eu-west-1",
        "AWS_SUBNET_ID": "subnet-1",
        "AWS_SG_IDS": "sg-1, sg-2",
        "SSH_KP_NAME": "kp",
        "PODVM_INSTANCE_TYPE": "m6a.xlarge",
        "PODVM_INSTANCE_TYPES": "m6a.large,m6a.xlarge",
        "USE_PUBLIC_IP": "true",
        "ROOT_VOLUME_SIZE": "50",
        "DISABLECVM": "1",
        "TAGS": "owner=me,cost=team-a",
        "PODVM_LAUNCHTEMPLATE_NAME": "lt",
        "USE_PODVM_LAUNCHTEMPLATE": "TRUE",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:5000",
        "AWS_API_RATE": "2.5",
        "AWS_IMDS_URL": "",
    }
    s = parse_settings(AwsSettings, [], env)
    assert s.region == "eu-west-1" and s.subnet_id == "subnet-1"
    assert s.security_group_ids == ("sg-1", "sg-2")
    assert s.key_name == "kp"
    assert s.instance_type == "m6a.xlarge"
    assert s.instance_types == ("m6a.large", "m6a.xlarge")
    assert s.use_public_ip and s.disable_cvm and s.use_launch_template
    assert s.root_volume_size == 50
    assert s.extra_tags == {"owner": "me", "cost": "team-a"}
    assert s.launch_template_name == "lt"
    assert s.endpoint_url == "http://127.0.0.1:5000"
    assert s.api_rate == 2.5
    assert s.imds_url == "http://169.254.169.254"  # empty env keeps the default


def test_upstream_bool_rule_for_env() -> None:
    assert parse_settings(AwsSettings, [], {**REQUIRED, "DISABLECVM": "yes"}).disable_cvm is False
    assert parse_settings(AwsSettings, [], {**REQUIRED, "DISABLECVM": "True"}).disable_cvm


def test_flag_overrides_env() -> None:
    env = {**REQUIRED, "PODVM_INSTANCE_TYPE": "m6a.xlarge", "AWS_REGION": "eu-west-1",
           "DISABLECVM": "true"}
    argv = ["-instance-type", "m6a.2xlarge", "--aws-region=us-east-2", "-imageid", "ami-flag",
            "-disable-cvm=false", "-aws-profile", "dev", "-aws-imds-url", ""]
    s = parse_settings(AwsSettings, argv, env)
    assert s.instance_type == "m6a.2xlarge"
    assert s.region == "us-east-2"
    assert s.image_id == "ami-flag"
    assert s.disable_cvm is False
    assert s.profile == "dev"
    assert s.imds_url == ""


def test_image_id_is_required() -> None:
    with pytest.raises(SettingsError, match="PODVM_AMI_ID"):
        parse_settings(AwsSettings, [], {})


def test_secrets_are_redacted() -> None:
    env = {**REQUIRED, "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "s3cr3t",
           "AWS_SESSION_TOKEN": "tok"}
    s = parse_settings(AwsSettings, [], env)
    shown = describe(s)
    assert shown["access_key_id"] == shown["secret_key"] == shown["session_token"] == "***"
    assert "s3cr3t" not in repr(shown)


def test_package_exports_without_importing_boto3() -> None:
    code = (
        "import sys, providers.aws as aws\n"
        "assert aws.Settings is not None and callable(aws.make_provider)\n"
        "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules, 'SDK imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    module = registry.load("aws")
    assert module.Settings is Settings


async def test_make_provider_does_no_network() -> None:
    settings = AwsSettings(image_id="ami-0abc", endpoint_url="http://127.0.0.1:9",
                           imds_url="http://127.0.0.1:9")
    provider = make_provider(settings, node_name="worker-1")
    assert provider.name == "aws"
    await provider.aclose()
