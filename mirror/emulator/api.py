"""The SageMaker side of the emulator: JSON 1.1 operations with AWS-shaped errors."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import re
from typing import TYPE_CHECKING, Any, Callable

import anyio
from aiohttp import web

from ..config import CONTENT_NAME as _NAME
from ..config import CONTENT_TYPES as _TYPES
from ..config import DOMAIN_ID as _DOMAIN
from ..config import HUB_NAME as _HUB
from ..config import S3_URL as _S3_URL
from ..config import VERSION as _VERSION
from ..config import version_key
from .content import HubContent

if TYPE_CHECKING:
    from .server import Emulator

_TOKEN_KEY = b"emulator-next-token"
_CREATED = 1_767_225_600  # 2026-01-01, a fixed creation time for every version


class ApiError(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


class SageMakerApi:
    def __init__(self, emulator: "Emulator") -> None:
        self.emulator = emulator
        self._used_tokens: set[str] = set()
        self._operations: dict[str, Callable[[dict[str, Any]], Any]] = {
            "CreateHubContentPresignedUrls": self.create_hub_content_presigned_urls,
            "ListHubContentVersions": self.list_hub_content_versions,
            "DescribeHubContent": self.describe_hub_content,
            "CreatePresignedDomainUrl": self.create_presigned_domain_url,
        }

    async def handle(self, request: web.Request) -> web.Response:
        operation = request.headers.get("X-Amz-Target", "").removeprefix("SageMaker.")
        self.emulator.stats.api_calls[operation] += 1
        if self.emulator.settings.latency:
            await anyio.sleep(self.emulator.settings.latency)
        try:
            if "Authorization" not in request.headers:
                raise ApiError("MissingAuthenticationTokenException", "Missing Authentication Token", 403)
            await self._inject_faults()
            if operation in self.emulator.settings.denied_operations:
                raise ApiError("AccessDeniedException",
                               f"User is not authorized to perform: sagemaker:{operation}", 400)
            handler = self._operations.get(operation)
            if handler is None:
                raise ApiError("UnknownOperationException", f"Unknown operation {operation!r}")
            body = json.loads(await request.read() or b"{}")
            result = await handler(body)
        except ApiError as err:
            return _json({"__type": err.code, "message": err.message}, err.status)
        return _json(result, 200)

    async def _inject_faults(self) -> None:
        if self.emulator.fault("api-stall"):
            await anyio.sleep(self.emulator.settings.stall)
        if self.emulator.fault("throttle"):
            raise ApiError("ThrottlingException", "Rate exceeded")

    # --- operations ----------------------------------------------------------------------

    async def create_hub_content_presigned_urls(self, body: dict[str, Any]) -> dict[str, Any]:
        content = self._content(body)
        version = self._version(content, body.get("HubContentVersion"))
        access = body.get("AccessConfig") or {}
        if content.gated and access.get("AcceptEula") is not True:
            raise ApiError("AccessDeniedException",
                           f"Hub content {content.name} is gated: set AccessConfig.AcceptEula to true "
                           "to accept its end-user license agreement (EULA)")
        self._check_expected_s3_url(access.get("ExpectedS3Url"), content.name, version)
        limit = _int_in(body, "MaxResults", 1, 100, default=100)
        start = self._offset(body.get("NextToken"), content.name, version)
        self._refuse_reused_token(body.get("NextToken"))
        if self.emulator.settings.page_delay:
            await anyio.sleep(self.emulator.settings.page_delay)
        objects = content.versions[version]
        page = objects[start:start + limit]
        result: dict[str, Any] = {"AuthorizedUrlConfigs": [
            {"Url": self.emulator.object_url(content.name, version, o),
             "LocalPath": self.emulator.settings.local_path_rewrites.get(o.local_path, o.local_path)} for o in page
        ]}
        if start + limit < len(objects):
            result["NextToken"] = _token(content.name, version, start + limit)
        return result

    async def list_hub_content_versions(self, body: dict[str, Any]) -> dict[str, Any]:
        content = self._content(body)
        limit = _int_in(body, "MaxResults", 1, 100, default=100)
        versions = sorted(content.versions, key=version_key)
        start = self._offset(body.get("NextToken"), content.name, "*")
        result: dict[str, Any] = {"HubContentSummaries": [
            self._summary(content, v) for v in versions[start:start + limit]
        ]}
        if start + limit < len(versions):
            result["NextToken"] = _token(content.name, "*", start + limit)
        return result

    async def describe_hub_content(self, body: dict[str, Any]) -> dict[str, Any]:
        content = self._content(body)
        version = self._version(content, body.get("HubContentVersion"))
        return {**self._summary(content, version), "HubName": body["HubName"],
                "HubArn": f"arn:aws:sagemaker:us-east-1:aws:hub/{body['HubName']}",
                "HubContentDocument": json.dumps({"Files": len(content.versions[version])})}

    async def create_presigned_domain_url(self, body: dict[str, Any]) -> dict[str, Any]:
        domain = _str_matching(body, "DomainId", _DOMAIN)
        user = _str_matching(body, "UserProfileName", _NAME)
        _int_in(body, "SessionExpirationDurationInSeconds", 1800, 43200, default=43200)
        expires = _int_in(body, "ExpiresInSeconds", 5, 300, default=300)
        if user not in self.emulator.settings.studio_users.get(domain, ()):
            raise ApiError("ResourceNotFound", f"User profile {user} does not exist in domain {domain}")
        ticket = hashlib.sha256(f"{domain}/{user}".encode()).hexdigest()[:32]
        url = f"https://{domain}.studio.us-east-1.sagemaker.aws/auth?token={ticket}&expires={expires}"
        if body.get("SpaceName"):
            url += f"&space={_str_matching(body, 'SpaceName', _NAME)}"
        return {"AuthorizedUrl": url}

    # --- helpers ---------------------------------------------------------------------------

    def _content(self, body: dict[str, Any]) -> HubContent:
        hub = _str_matching(body, "HubName", _HUB).rsplit("/", 1)[-1]
        content_type = body.get("HubContentType")
        if content_type not in _TYPES:
            raise ApiError("ValidationException", _constraint("hubContentType", content_type,
                                                              f"Member must satisfy enum value set: {list(_TYPES)}"))
        name = _str_matching(body, "HubContentName", _NAME)
        if hub not in self.emulator.settings.hubs:
            raise ApiError("ResourceNotFound", f"Hub {hub} does not exist")
        content = self.emulator.catalog.contents.get(name)
        if content is None or content.content_type != content_type:
            raise ApiError("ResourceNotFound", f"Hub content {name} of type {content_type} does not exist in hub {hub}")
        return content

    @staticmethod
    def _version(content: HubContent, version: Any) -> str:
        if version is None:
            return content.latest
        if not isinstance(version, str) or not _VERSION.fullmatch(version):
            raise ApiError("ValidationException", _constraint("hubContentVersion", version,
                                                              "Member must satisfy regular expression pattern: \\d{1,4}.\\d{1,4}.\\d{1,4}"))
        if version not in content.versions:
            raise ApiError("ResourceNotFound", f"Hub content {content.name} version {version} does not exist")
        return version

    @staticmethod
    def _check_expected_s3_url(expected: Any, name: str, version: str) -> None:
        if expected is None:
            return
        if not isinstance(expected, str) or not _S3_URL.fullmatch(expected):
            raise ApiError("ValidationException", _constraint("accessConfig.expectedS3Url", expected,
                                                              "Member must satisfy regular expression pattern: (https|s3)://([^/]+)/?(.*)"))
        actual = f"s3://emulator-hub/{name}/{version}/"
        if not actual.startswith(expected.rstrip("/") + "/") and expected != actual.rstrip("/"):
            raise ApiError("ValidationException", f"ExpectedS3Url {expected} does not match the content's location {actual}")

    def _refuse_reused_token(self, token: str | None) -> None:
        if token is None:
            return
        if token in self._used_tokens and self.emulator.fault("token-refused"):
            raise ApiError("ValidationException", "The NextToken has expired; start the listing again")
        self._used_tokens.add(token)

    @staticmethod
    def _offset(token: Any, name: str, version: str) -> int:
        if token is None:
            return 0
        try:
            payload, signature = str(token).rsplit(".", 1)
            if not hmac.compare_digest(_sign(payload), signature):
                raise ValueError("bad signature")
            data = json.loads(base64.urlsafe_b64decode(payload))
        except ValueError as exc:
            raise ApiError("ValidationException", "Invalid NextToken") from exc
        if data.get("n") != name or data.get("v") != version:
            raise ApiError("ValidationException", "NextToken does not belong to this request")
        return int(data["o"])

    @staticmethod
    def _summary(content: HubContent, version: str) -> dict[str, Any]:
        return {
            "HubContentName": content.name,
            "HubContentArn": f"arn:aws:sagemaker:us-east-1:aws:hub-content/SageMakerPublicHub/{content.content_type}/{content.name}/{version}",
            "HubContentVersion": version,
            "HubContentType": content.content_type,
            "DocumentSchemaVersion": "2.0.0",
            "HubContentStatus": "Available",
            "CreationTime": _CREATED,
        }


_issued = itertools.count()


def _token(name: str, version: str, offset: int) -> str:
    """An opaque token; each one issued is distinct, as a real service's would be."""
    data = {"n": name, "v": version, "o": offset, "i": next(_issued)}
    payload = base64.urlsafe_b64encode(json.dumps(data).encode()).decode()
    return f"{payload}.{_sign(payload)}"


def _sign(payload: str) -> str:
    return hmac.new(_TOKEN_KEY, payload.encode(), hashlib.sha256).hexdigest()[:24]


def _str_matching(body: dict[str, Any], key: str, pattern: re.Pattern[str]) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ApiError("ValidationException", _constraint(key[0].lower() + key[1:], value,
                                                          f"Member must satisfy regular expression pattern: {pattern.pattern}"))
    return value


def _int_in(body: dict[str, Any], key: str, low: int, high: int, *, default: int) -> int:
    value = body.get(key, default)
    if not isinstance(value, int) or not low <= value <= high:
        bound = f"greater than or equal to {low}" if isinstance(value, int) and value < low \
            else f"less than or equal to {high}"
        raise ApiError("ValidationException", _constraint(key[0].lower() + key[1:], value, f"Member must have value {bound}"))
    return value


def _constraint(field_name: str, value: Any, rule: str) -> str:
    return f"1 validation error detected: Value '{value}' at '{field_name}' failed to satisfy constraint: {rule}"


def _json(data: dict[str, Any], status: int) -> web.Response:
    return web.Response(status=status, text=json.dumps(data), content_type="application/x-amz-json-1.1")
