"""The SageMaker side, through the real aiobotocore client.

- `HubClient.pages()` yields pages of presigned URLs lazily: the next page is requested
  only when the caller asks for it, which is what gives the pipeline its backpressure.
- Each `Page` keeps its URLs with their expiry. When a URL runs short (or a GET answered
  `403 Request has expired`), the whole page is re-requested with the same NextToken, one
  call renewing every URL of the page; concurrent renewals of one page share that call.
  If the service refuses the old token, the listing is re-paged from the start and the
  page's files are matched by LocalPath.
- botocore and credential errors are translated into `HubError`s here, where they enter.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import botocore.exceptions
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession

from . import events, presign
from .config import AwsSettings, StudioUrlSettings, SyncSettings, version_key
from .errors import AccessDenied, ContentNotFound, EulaRequired, HubError, UsageError

_DENIED_CODES = {"AccessDeniedException", "AccessDenied", "UnrecognizedClientException",
                 "InvalidClientTokenId", "ExpiredTokenException", "MissingAuthenticationTokenException",
                 "InvalidSignatureException", "SignatureDoesNotMatch"}


@dataclass(frozen=True, slots=True)
class ContentRef:
    """Which content to list: the fixed part of every CreateHubContentPresignedUrls call."""

    hub: str
    content_type: str
    name: str
    version: str | None
    accept_eula: bool
    expected_s3_url: str | None

    @classmethod
    def of(cls, settings: SyncSettings) -> "ContentRef":
        return cls(settings.hub, settings.content_type, settings.name, settings.version,
                   settings.accept_eula, settings.expected_s3_url)

    def at(self, version: str | None) -> "ContentRef":
        return dataclasses.replace(self, version=version)

    def request(self, page_size: int, token: str | None) -> dict[str, Any]:
        params: dict[str, Any] = {"HubName": self.hub, "HubContentType": self.content_type,
                                  "HubContentName": self.name, "MaxResults": page_size}
        if self.version is not None:
            params["HubContentVersion"] = self.version
        access: dict[str, Any] = {}
        if self.accept_eula:
            access["AcceptEula"] = True
        if self.expected_s3_url is not None:
            access["ExpectedS3Url"] = self.expected_s3_url
        if access:
            params["AccessConfig"] = access
        if token is not None:
            params["NextToken"] = token
        return params


Listing = list[tuple[str, presign.PresignedUrl]]


class HubClient:
    """The SageMaker API calls the mirror makes, with errors translated."""

    def __init__(self, client: Any, observer: events.Observer = events.ignore) -> None:
        self._client = client
        self.observer = observer

    @classmethod
    @asynccontextmanager
    async def open(cls, aws: AwsSettings, observer: events.Observer = events.ignore) -> AsyncIterator["HubClient"]:
        try:
            session = AioSession(profile=aws.profile)
            context = session.create_client("sagemaker", region_name=_region(session, aws),
                                            endpoint_url=aws.endpoint_url, config=_api_config(aws),
                                            verify=aws.ca_bundle)
            client = await context.__aenter__()
        except botocore.exceptions.ProfileNotFound as exc:
            raise UsageError(f"AWS profile {aws.profile!r} not found") from exc
        except botocore.exceptions.NoRegionError as exc:
            raise UsageError("no AWS region: pass --region or set AWS_REGION") from exc
        except ValueError as exc:  # botocore rejects a malformed endpoint URL this way
            raise UsageError(f"endpoint_url: {exc}") from exc
        try:
            yield cls(client, observer)
        finally:
            await context.__aexit__(None, None, None)

    async def list_page(self, ref: ContentRef, page_size: int, token: str | None) -> tuple[Listing, str | None]:
        """One CreateHubContentPresignedUrls call: `[(LocalPath, url)]` and the next token."""
        reply = await self._call("create_hub_content_presigned_urls", **ref.request(page_size, token))
        listing = [(item["LocalPath"], _parse_url(item["Url"], item["LocalPath"]))
                   for item in reply.get("AuthorizedUrlConfigs", [])]
        return listing, reply.get("NextToken") or None

    async def pages(self, ref: ContentRef, page_size: int) -> AsyncIterator["Page"]:
        """Every page of the listing, requested only as the caller consumes them."""
        token: str | None = None
        index = 0
        while True:
            listing, next_token = await self.list_page(ref, page_size, token)
            self.observer(events.PageListed(index, len(listing)))
            yield Page(self, ref, page_size, index, token, listing)
            if next_token is None:
                return
            token, index = next_token, index + 1

    async def latest_version(self, ref: ContentRef) -> str | None:
        """The highest semantic version from ListHubContentVersions (no paginator: a loop).

        None when the caller may not list versions (the HyperPod gated-model policy grants
        only CreateHubContentPresignedUrls): the service then serves its latest itself.
        """
        versions: list[str] = []
        token: str | None = None
        params = {"HubName": ref.hub, "HubContentType": ref.content_type, "HubContentName": ref.name}
        while True:
            try:
                reply = await self._call("list_hub_content_versions", **params,
                                         **({"NextToken": token} if token else {}))
            except AccessDenied:
                return None
            versions += [s["HubContentVersion"] for s in reply.get("HubContentSummaries", [])]
            token = reply.get("NextToken")
            if not token:
                break
        if not versions:
            raise ContentNotFound(f"no versions of {ref.name} in hub {ref.hub}")
        return max(versions, key=version_key)

    async def studio_url(self, settings: StudioUrlSettings) -> str:
        params: dict[str, Any] = {"DomainId": settings.domain_id, "UserProfileName": settings.user_profile}
        optional = {"SpaceName": settings.space, "ExpiresInSeconds": settings.expires_in,
                    "SessionExpirationDurationInSeconds": settings.session_expiration,
                    "LandingUri": settings.landing_uri}
        params.update({k: v for k, v in optional.items() if v is not None})
        reply = await self._call("create_presigned_domain_url", **params)
        return reply["AuthorizedUrl"]

    async def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        try:
            return await getattr(self._client, operation)(**params)
        except botocore.exceptions.ClientError as exc:
            raise translate_client_error(exc) from exc
        except botocore.exceptions.NoCredentialsError as exc:
            raise AccessDenied("no AWS credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                               "AWS_PROFILE or --profile") from exc
        except (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectTimeoutError,
                botocore.exceptions.ReadTimeoutError) as exc:
            raise HubError(f"cannot reach the SageMaker API: {exc}") from exc
        except botocore.exceptions.ParamValidationError as exc:
            raise UsageError(str(exc).replace("\n", " ")) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise HubError(f"SageMaker API call failed: {exc}") from exc


def _region(session: AioSession, aws: AwsSettings) -> str | None:
    """The configured region; with a custom endpoint and none configured, us-east-1.

    A custom endpoint (the emulator, a VPC endpoint) already says where to go; the region
    is then only the name signed into requests, and needing one would be a needless step.
    """
    region = aws.region or session.get_config_variable("region")
    return region or ("us-east-1" if aws.endpoint_url else None)


def _api_config(aws: AwsSettings) -> AioConfig:
    return AioConfig(retries={"mode": "standard", "max_attempts": aws.api_attempts},
                     connect_timeout=10, read_timeout=aws.api_timeout)


def translate_client_error(exc: botocore.exceptions.ClientError) -> HubError:
    error = exc.response.get("Error", {})
    code = error.get("Code", "")
    message = presign.scrub(error.get("Message", "") or str(exc))
    operation = exc.operation_name
    if "eula" in message.lower():
        return EulaRequired(f"{message} (re-run with --accept-eula to accept it)")
    if code in ("ResourceNotFound", "ResourceNotFoundException"):
        return ContentNotFound(f"{operation}: {message}")
    if code in _DENIED_CODES:
        return AccessDenied(f"{operation}: {code}: {message}")
    return HubError(f"{operation}: {code}: {message}")


def _needs_renewal(url: presign.PresignedUrl, margin: float) -> bool:
    """Renew when less than `margin` is left; 0 turns renewal-ahead off (403s still renew).

    The margin never exceeds a quarter of the URL's lifetime, so URLs much shorter-lived
    than the margin are still used for most of their life instead of renewed every time.
    """
    return margin > 0 and url.remaining() < min(margin, url.lifetime / 4)


def _parse_url(url: str, local_path: str) -> presign.PresignedUrl:
    try:
        return presign.parse(url)
    except ValueError as exc:
        raise HubError(f"the service sent an unusable URL for {local_path!r}: {exc}") from exc


class Page:
    """One page of URLs, renewed together; files hold it through `lease()`."""

    def __init__(self, client: HubClient, ref: ContentRef, page_size: int, index: int,
                 token: str | None, listing: Listing) -> None:
        self.index = index
        self.local_paths = [path for path, _ in listing]  # in listed order, repeats kept
        self.urls = dict(listing)
        self._client, self._ref, self._page_size, self._token = client, ref, page_size, token
        self._lock = anyio.Lock()

    def lease(self, local_path: str) -> "PageUrl":
        return PageUrl(self, local_path)

    async def fresh(self, local_path: str, margin: float) -> presign.PresignedUrl:
        """The file's URL, renewed first when its remaining life is under the margin."""
        if not _needs_renewal(self.urls[local_path], margin):
            return self.urls[local_path]
        async with self._lock:  # another file of this page may have renewed it meanwhile
            if _needs_renewal(self.urls[local_path], margin):
                await self._refresh("ahead of expiry")
        return self._current(local_path)

    async def renew(self, local_path: str, stale: presign.PresignedUrl) -> presign.PresignedUrl:
        """A new URL after `stale` was refused as expired (unless renewed meanwhile)."""
        async with self._lock:
            if self.urls[local_path].url == stale.url:
                await self._refresh("expired")
        return self._current(local_path)

    def _current(self, local_path: str) -> presign.PresignedUrl:
        url = self.urls[local_path]
        if url.remaining() <= 0:
            raise HubError(f"the service no longer offers a URL for {local_path!r}")
        return url

    async def _refresh(self, reason: str) -> None:
        try:
            listing, _ = await self._client.list_page(self._ref, self._page_size, self._token)
        except HubError:
            if self._token is None:
                raise
            listing = []  # the service refused the old token: look for the files from the start
        fresh = {path: url for path, url in listing if path in self.urls}
        if len(fresh) < len(self.urls):
            fresh.update(await self._find_from_start(set(self.urls) - set(fresh)))
        self.urls.update(fresh)
        self._client.observer(events.UrlsRefreshed(self.index, len(fresh), reason))

    async def _find_from_start(self, wanted: set[str]) -> dict[str, presign.PresignedUrl]:
        found: dict[str, presign.PresignedUrl] = {}
        token: str | None = None
        while wanted - set(found):
            listing, token = await self._client.list_page(self._ref, self._page_size, token)
            found.update((path, url) for path, url in listing if path in wanted)
            if token is None:
                break
        return found


@dataclass(frozen=True, slots=True)
class PageUrl:
    """One file's URL inside its page: the `plan.UrlLease` the transfer layer uses."""

    page: Page
    local_path: str

    async def fresh(self, margin: float) -> presign.PresignedUrl:
        return await self.page.fresh(self.local_path, margin)

    async def renew(self, stale: presign.PresignedUrl) -> presign.PresignedUrl:
        return await self.page.renew(self.local_path, stale)
