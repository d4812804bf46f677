"""The emulator behaves like S3 and SageMaker on the wire (real sockets, real aiobotocore)."""

import hashlib

import aiohttp
import pytest
from aiobotocore.session import get_session
from yarl import URL

from tests.conftest import SMALL_MODEL

pytestmark = pytest.mark.anyio


async def _first_page(endpoint, **params):
    async with get_session().create_client("sagemaker", region_name="us-east-1", endpoint_url=endpoint) as client:
        return await client.create_hub_content_presigned_urls(
            HubName="SageMakerPublicHub", HubContentType="Model", HubContentName="small-model", **params)


def _url_of(page, local_path):
    return next(item["Url"] for item in page["AuthorizedUrlConfigs"] if item["LocalPath"] == local_path)


async def _get(url, **headers):
    async with aiohttp.ClientSession() as session:
        async with session.get(URL(url, encoded=True), headers=headers) as response:
            return response.status, response.headers.copy(), await response.read()


async def test_pages_cover_every_file_once_with_opaque_tokens(emulator_factory):
    async with emulator_factory() as emulator:
        seen, token = [], None
        while True:
            page = await _first_page(emulator.endpoint, HubContentVersion="1.0.0", MaxResults=3,
                                     **({"NextToken": token} if token else {}))
            seen += [item["LocalPath"] for item in page["AuthorizedUrlConfigs"]]
            token = page.get("NextToken")
            if not token:
                break
    assert sorted(seen) == sorted("/" + name for name in SMALL_MODEL)


async def test_ranges_etags_and_preconditions(emulator_factory, content_root):
    async with emulator_factory() as emulator:
        page = await _first_page(emulator.endpoint, HubContentVersion="1.0.0")
        data = (content_root / "small-model/1.0.0/config.json").read_bytes()
        url = _url_of(page, "/config.json")
        status, headers, body = await _get(url, Range="bytes=10-19")
        assert (status, headers["Content-Range"], body) == (206, f"bytes 10-19/{len(data)}", data[10:20])
        assert headers["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
        assert (await _get(url, Range=f"bytes={len(data)}-"))[0] == 416
        assert (await _get(url, **{"If-Match": '"0000"'}))[0] == 412
        status, _, body = await _get(url)
        assert (status, body) == (200, data)
        _, headers, _ = await _get(_url_of(page, "/weights/model-00001.safetensors"), Range="bytes=0-0")
        assert headers["ETag"].endswith('-4"')  # 3 MiB + 17 bytes in 1 MiB parts
        status, headers, _ = await _get(_url_of(page, "/empty.txt"), Range="bytes=0-0")
        assert (status, headers["Content-Range"]) == (416, "bytes */0")


async def test_signature_expiry_and_unsigned_headers_are_enforced(emulator_factory):
    async with emulator_factory(url_ttl=1) as emulator:
        page = await _first_page(emulator.endpoint, HubContentVersion="1.0.0")
        url = _url_of(page, "/config.json")
        status, _, body = await _get(url, **{"x-amz-checksum-mode": "ENABLED"})
        assert status == 403 and b"not signed" in body
        status, _, body = await _get(url.replace("config.json", "tokenizer.json"))
        assert status == 403 and b"SignatureDoesNotMatch" in body
        async with aiohttp.ClientSession() as session:
            async with session.head(URL(url, encoded=True)) as response:
                assert response.status == 403  # the URL signs GET only
        import anyio
        await anyio.sleep(2.1)
        status, _, body = await _get(url)
        assert status == 403 and b"Request has expired" in body


async def test_gated_content_needs_the_eula(emulator_factory):
    from botocore.exceptions import ClientError

    async with emulator_factory() as emulator:
        async with get_session().create_client("sagemaker", region_name="us-east-1",
                                               endpoint_url=emulator.endpoint) as client:
            with pytest.raises(ClientError, match="EULA"):
                await client.create_hub_content_presigned_urls(
                    HubName="SageMakerPublicHub", HubContentType="Model", HubContentName="gated-model")
            page = await client.create_hub_content_presigned_urls(
                HubName="SageMakerPublicHub", HubContentType="Model", HubContentName="gated-model",
                AccessConfig={"AcceptEula": True})
    assert [item["LocalPath"] for item in page["AuthorizedUrlConfigs"]] == ["/weights.bin"]


async def test_validation_errors_have_the_aws_shape(emulator_factory):
    from botocore.exceptions import ClientError

    async with emulator_factory() as emulator:
        async with aiohttp.ClientSession() as session:
            async with session.post(emulator.endpoint + "/", json={
                "HubName": "SageMakerPublicHub", "HubContentType": "Model", "HubContentName": "small-model",
                "MaxResults": 101}, headers={"X-Amz-Target": "SageMaker.CreateHubContentPresignedUrls",
                                             "Authorization": "AWS4-HMAC-SHA256 test"}) as response:
                body = await response.json(content_type=None)
        assert response.status == 400 and body["__type"] == "ValidationException"
        assert "less than or equal to 100" in body["message"]
        with pytest.raises(ClientError) as raised:
            await _first_page(emulator.endpoint, NextToken="forged.token")
        assert raised.value.response["Error"]["Code"] == "ValidationException"


async def test_latest_version_and_description(emulator_factory):
    async with emulator_factory() as emulator:
        async with get_session().create_client("sagemaker", region_name="us-east-1",
                                               endpoint_url=emulator.endpoint) as client:
            versions = await client.list_hub_content_versions(
                HubName="SageMakerPublicHub", HubContentType="Model", HubContentName="small-model")
            described = await client.describe_hub_content(
                HubName="SageMakerPublicHub", HubContentType="Model", HubContentName="small-model")
    assert [v["HubContentVersion"] for v in versions["HubContentSummaries"]] == ["1.0.0", "1.1.0"]
    assert described["HubContentVersion"] == "1.1.0"
