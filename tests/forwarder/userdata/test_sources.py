"""User-data sources against loopback servers that speak each metadata protocol."""

from __future__ import annotations

import asyncio
import base64
import logging
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from forwarder.userdata import sources
from forwarder.userdata.config import ProvisionConfig
from forwarder.userdata.detect import cloud_from_dmi, detect_source, read_dmi
from forwarder.userdata.errors import FetchError, ProvisionError
from forwarder.userdata.provision import provision_files, retrieve
from protocols.userdata import APF_JSON_PATH, WriteFile, render
from tests.forwarder.userdata.conftest import Serve, with_cidata, with_dmi
from tests.forwarder.userdata.metadata_servers import AwsImds, AzureImds, GcpMetadata

APF = '{\n    "pod-name": "nginx",\n    "tls-server-key": "-----BEGIN PRIVATE KEY-----\\nSECRETKEYMATERIAL\\n-----END PRIVATE KEY-----\\n"\n}\n'  # noqa: E501
USER_DATA = render([WriteFile(APF_JSON_PATH, APF)]).encode()


def _apf(config: ProvisionConfig) -> Path:
    return config.peerpod_dir / "apf.json"


# ------------------------------------------------------------------------------ AWS


async def test_aws_imdsv2_token_then_user_data(serve: Serve, config: ProvisionConfig) -> None:
    imds = AwsImds(USER_DATA, token="tok-SECRET-123")
    config = replace(
        with_dmi(config, sys_vendor="Amazon EC2"), aws_imds_url=await serve(imds.app())
    )

    result = await provision_files(config)

    assert result.source == "aws"
    assert _apf(config).read_text() == APF
    put, get = imds.requests
    assert (put.method, put.path) == ("PUT", "/latest/api/token")
    assert put.headers["X-aws-ec2-metadata-token-ttl-seconds"] == "60"
    assert (get.method, get.path) == ("GET", "/latest/user-data")
    assert get.headers["X-aws-ec2-metadata-token"] == "tok-SECRET-123"


async def test_aws_falls_back_to_imdsv1(serve: Serve, config: ProvisionConfig) -> None:
    imds = AwsImds(USER_DATA, imdsv2=False)
    config = replace(
        with_dmi(config, sys_vendor="Amazon EC2"), aws_imds_url=await serve(imds.app())
    )

    result = await provision_files(config)

    assert result.source == "aws"
    assert _apf(config).read_text() == APF
    (get,) = imds.user_data_requests()
    assert "X-aws-ec2-metadata-token" not in get.headers


async def test_aws_token_timeout_falls_back(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = asyncio.Event()

    async def slow_token(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="late")

    async def user_data(request: web.Request) -> web.Response:
        assert "X-aws-ec2-metadata-token" not in request.headers
        return web.Response(body=b"raw user data")

    app = web.Application()
    app.router.add_put("/latest/api/token", slow_token)
    app.router.add_get("/latest/user-data", user_data)
    monkeypatch.setattr(sources, "AWS_TOKEN_TIMEOUT", 0.2)
    async with aiohttp.ClientSession() as session:
        source = sources.AwsSource(session, await serve(app))
        try:
            assert await source.fetch() == b"raw user data"
        finally:
            release.set()


async def test_aws_without_token_is_rejected_by_imdsv2_server(serve: Serve) -> None:
    """The fake really enforces IMDSv2: a GET without the token gets 401."""
    imds = AwsImds(USER_DATA)
    base = await serve(imds.app())
    async with aiohttp.ClientSession() as session:
        with pytest.raises(FetchError, match="401"):
            await sources.http_get(session, base + "/latest/user-data", {})


async def test_token_and_user_data_never_logged(
    serve: Serve, config: ProvisionConfig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    imds = AwsImds(USER_DATA, token="tok-SECRET-123")
    config = replace(
        with_dmi(config, sys_vendor="Amazon EC2"), aws_imds_url=await serve(imds.app())
    )
    await provision_files(config)
    assert "source=aws" in caplog.text
    assert "tok-SECRET-123" not in caplog.text
    assert "SECRETKEYMATERIAL" not in caplog.text


# ---------------------------------------------------------------------------- Azure


async def test_azure_user_data(serve: Serve, config: ProvisionConfig) -> None:
    imds = AzureImds(USER_DATA)
    config = replace(
        with_dmi(config, sys_vendor="Microsoft Corporation", product_name="Virtual Machine"),
        azure_imds_url=await serve(imds.app()),
    )

    result = await provision_files(config)

    assert result.source == "azure"
    assert _apf(config).read_text() == APF
    (req,) = imds.requests
    assert req.headers["Metadata"] == "true"
    assert req.query == {"api-version": "2021-01-01", "format": "text"}


async def test_azure_requires_metadata_header(serve: Serve) -> None:
    base = await serve(AzureImds(USER_DATA).app())
    async with aiohttp.ClientSession() as session:
        with pytest.raises(FetchError, match="400"):
            await sources.http_get(session, base + sources.AZURE_USER_DATA_PATH, {})


async def test_azure_retries_500_twice_then_succeeds(
    serve: Serve, config: ProvisionConfig
) -> None:
    imds = AzureImds(USER_DATA)
    imds.script.before = [500, 500]
    config = replace(
        with_dmi(config, chassis_asset_tag="7783-7084-3265-9085-8269-3286-77"),
        azure_imds_url=await serve(imds.app()),
    )

    result = await provision_files(config)

    assert result.source == "azure"
    assert len(imds.requests) == 3
    assert _apf(config).read_text() == APF


async def test_azure_bad_base64_is_retried(serve: Serve, config: ProvisionConfig) -> None:
    imds = AzureImds(USER_DATA)
    imds.script.before = [b"%%% not base64 %%%"]
    config = replace(
        with_dmi(config, sys_vendor="Microsoft Corporation"),
        azure_imds_url=await serve(imds.app()),
    )
    await provision_files(config)
    assert len(imds.requests) == 2
    assert _apf(config).read_text() == APF


# ------------------------------------------------------------------------------ GCP


async def test_gcp_user_data(serve: Serve, config: ProvisionConfig) -> None:
    server = GcpMetadata(USER_DATA)
    config = replace(
        with_dmi(config, sys_vendor="Google", product_name="Google Compute Engine"),
        gcp_metadata_url=await serve(server.app()),
    )

    result = await provision_files(config)

    assert result.source == "gcp"
    assert _apf(config).read_text() == APF
    (req,) = server.requests
    assert req.headers["Metadata-Flavor"] == "Google"


async def test_gcp_requires_flavor_header(serve: Serve) -> None:
    base = await serve(GcpMetadata(USER_DATA).app())
    async with aiohttp.ClientSession() as session:
        with pytest.raises(FetchError, match="403"):
            await sources.http_get(session, base + sources.GCP_USER_DATA_PATH, {})


async def test_parse_errors_are_retried(serve: Serve, config: ProvisionConfig) -> None:
    server = GcpMetadata(USER_DATA)
    server.script.before = [base64.b64encode(b"just some text"), 503]
    config = replace(
        with_dmi(config, product_name="Google Compute Engine"),
        gcp_metadata_url=await serve(server.app()),
    )
    await provision_files(config)
    assert len(server.requests) == 3
    assert _apf(config).read_text() == APF


async def test_gives_up_after_timeout_with_last_error(
    serve: Serve, config: ProvisionConfig
) -> None:
    server = GcpMetadata(USER_DATA)
    server.script.before = [500] * 1000
    config = replace(
        with_dmi(config, sys_vendor="Google"),
        gcp_metadata_url=await serve(server.app()),
        fetch_timeout=1.0,
    )
    with pytest.raises(ProvisionError, match=r"source gcp within 1s .*500"):
        await provision_files(config)
    assert 2 <= len(server.requests) <= 25
    assert not (config.peerpod_dir / "initdata.digest").exists()


async def test_unreachable_endpoint_is_a_fetch_error() -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(FetchError, match=r"127\.0\.0\.1:9"):
            await sources.http_get(session, "http://127.0.0.1:9/x", {})


async def test_oversized_answer_is_refused(serve: Serve) -> None:
    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"a" * (2 * 1024 * 1024))

    app = web.Application()
    app.router.add_get("/latest/user-data", big)
    base = await serve(app)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(FetchError, match="larger than"):
            await sources.http_get(session, base + "/latest/user-data", {})


async def test_retrieve_counts_attempts() -> None:
    class Flaky:
        name = "flaky"

        def __init__(self) -> None:
            self.calls = 0

        async def fetch(self) -> bytes:
            self.calls += 1
            if self.calls < 3:
                raise FetchError("not yet")
            return USER_DATA

    flaky = Flaky()
    files = await retrieve(flaky, timeout=5, retry_delay=0.01)
    assert flaky.calls == 3
    assert files == [WriteFile(APF_JSON_PATH, APF)]


# ------------------------------------------------------------------------ detection


@pytest.mark.parametrize(
    ("dmi", "cloud"),
    [
        ({"sys_vendor": "Amazon EC2", "product_name": "m6a.large"}, "aws"),
        ({"sys_vendor": "Microsoft Corporation", "product_name": "Virtual Machine"}, "azure"),
        ({"chassis_asset_tag": "7783-7084-3265-9085-8269-3286-77"}, "azure"),
        ({"sys_vendor": "Google", "product_name": "Google Compute Engine"}, "gcp"),
        ({"product_name": "Google Compute Engine"}, "gcp"),
        ({"sys_vendor": "Alibaba Cloud", "product_name": "Alibaba Cloud ECS"}, "alibaba"),
        ({"sys_vendor": "QEMU", "product_name": "Standard PC (Q35 + ICH9, 2009)"}, None),
        ({}, None),
    ],
)
def test_cloud_from_dmi(tmp_path: Path, dmi: dict[str, str], cloud: str | None) -> None:
    for key, value in dmi.items():
        (tmp_path / key).write_text(value + "\n")
    assert read_dmi(tmp_path) == dmi
    assert cloud_from_dmi(read_dmi(tmp_path)) == cloud


async def test_config_drive_file_comes_first(serve: Serve, config: ProvisionConfig) -> None:
    imds = AwsImds(USER_DATA)
    config = replace(
        with_cidata(with_dmi(config, sys_vendor="Amazon EC2"), USER_DATA),
        aws_imds_url=await serve(imds.app()),
    )
    async with aiohttp.ClientSession() as session:
        source = detect_source(config, session)
        assert isinstance(source, sources.FileSource)
    result = await provision_files(config)
    assert result.source == "file"
    assert imds.requests == []


async def test_no_source_means_initdata_only(config: ProvisionConfig) -> None:
    async with aiohttp.ClientSession() as session:
        assert detect_source(config, session) is None
    result = await provision_files(config)
    assert result.source is None
    assert result.written == ()
    assert (config.peerpod_dir / "initdata.digest").exists()
