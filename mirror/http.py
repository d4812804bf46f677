"""Ranged GETs of presigned URLs over aiohttp, with every answer checked and classified.

`RangeClient.get()` sends one `GET` with `Range` (and `If-Match` once the ETag is known),
and turns whatever comes back into either a `Body` to stream or one of the `FetchError`s
below, whose messages never contain the URL's query string.
"""

from __future__ import annotations

import asyncio
import os
import re
import ssl
import urllib.request
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
from yarl import URL

from . import presign

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes \*/(\d+)")
_ERROR_CODE = re.compile(r"<Code>([^<]*)</Code>")
_ERROR_MESSAGE = re.compile(r"<Message>([^<]*)</Message>")
_READ_SIZE = 256 * 1024  # per read from a connection; aiohttp buffers at most twice this
_TRANSIENT_STATUS = {500, 502, 503, 504}


class FetchError(Exception):
    """Base of the ways one GET can fail; the transfer layer decides what each means."""


class UrlExpired(FetchError):
    """403 `Request has expired`: renew the URL and ask again; never counted as a failure."""


class Transient(FetchError):
    """Worth retrying after a backoff: 5xx, SlowDown, resets, timeouts, short bodies."""


class ObjectChanged(FetchError):
    """412, or the ETag/size no longer match what earlier answers said."""


class Refused(FetchError):
    """A permanent refusal (403 other than expiry, 404, ...): retrying will not help."""


class EmptyObject(FetchError):
    """416 on a range starting at 0 with total 0: the object is zero bytes long."""


@dataclass(slots=True)
class Body:
    """A response ready to stream: which bytes it carries and of what object."""

    start: int  # offset of the first byte in the object
    end: int  # offset of the last byte (inclusive)
    total: int  # object size
    etag: str | None
    response: aiohttp.ClientResponse

    @property
    def headers(self) -> Mapping[str, str]:
        return self.response.headers

    async def read_all(self) -> bytes:
        """The whole (small) body at once, raising `Transient` on a reset or a short body."""
        try:
            data = await self.response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise Transient(f"connection lost mid-body ({type(exc).__name__})") from None
        if len(data) != self.end - self.start + 1:
            raise Transient(f"body ended after {len(data)} of {self.end - self.start + 1} bytes")
        return data

    async def blocks(self) -> AsyncIterator[bytes]:
        """The body in blocks, raising `Transient` on a reset or a short body."""
        expected = self.end - self.start + 1
        received = 0
        try:
            async for block in self.response.content.iter_chunked(_READ_SIZE):
                received += len(block)
                yield block
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise Transient(f"connection lost mid-body ({type(exc).__name__})") from None
        if received < expected:
            raise Transient(f"body ended after {received} of {expected} bytes")


class RangeClient:
    """One aiohttp session shared by every download of a run."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session
        self._proxies: dict[tuple[str, str], str | None] = {}

    def _proxy_for(self, url: URL) -> str | None:
        """HTTP(S)_PROXY / NO_PROXY, decided once per scheme and host.

        aiohttp's own `trust_env` re-reads the environment on every request, which cost a
        quarter of the run time on 5,000 small files (benchmarks/run.py, "small").
        """
        key = (url.scheme, url.host or "")
        if key not in self._proxies:
            settings = urllib.request.getproxies_environment()
            proxy = settings.get(url.scheme)
            bypass = proxy and urllib.request.proxy_bypass_environment(url.host or "", settings)
            self._proxies[key] = None if bypass else proxy
        return self._proxies[key]

    @classmethod
    @asynccontextmanager
    async def open(cls, *, connections: int, per_host: int | None = None,
                   ca_bundle: str | None = None) -> AsyncIterator["RangeClient"]:
        """A client whose connector allows `connections` at once (and `per_host` to one host):
        every request waits, first come first served, for one and holds it until its body is
        read. HTTP(S)_PROXY / NO_PROXY are honoured; `ca_bundle` (or AWS_CA_BUNDLE) adds the
        CAs of a TLS-inspecting proxy or private endpoint."""
        bundle = ca_bundle or os.environ.get("AWS_CA_BUNDLE")
        tls = ssl.create_default_context(cafile=bundle) if bundle else True
        connector = aiohttp.TCPConnector(limit=connections, limit_per_host=per_host or 0, ttl_dns_cache=300, ssl=tls)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=15, sock_read=60)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False,
                                         read_bufsize=_READ_SIZE) as session:
            yield cls(session)

    @asynccontextmanager
    async def get(self, url: str, start: int, end: int, if_match: str | None) -> AsyncIterator[Body]:
        """GET bytes `start..end` (inclusive) of `url`; yields a checked `Body`."""
        headers = {"Range": f"bytes={start}-{end}"}
        if if_match:
            headers["If-Match"] = f'"{if_match}"'
        async with self._send(url, headers) as response:
            yield await _classify(response, url)

    async def unchanged(self, url: str, etag: str | None, size: int) -> bool:
        """Whether the object is as recorded, by a conditional GET that moves no payload.

        `If-None-Match` is evaluated before `Range`: a 304 proves the ETag is unchanged.
        Without a recorded ETag only an empty object can be proven unchanged (416 */0).
        """
        headers = {"Range": "bytes=0-0"}
        if etag is not None:
            headers["If-None-Match"] = f'"{etag}"'
        elif size != 0:
            return False
        try:
            async with self._send(url, headers) as response:
                if response.status == 304:
                    return True
                if response.status not in (200, 206):
                    await _classify(response, url)  # raises the matching FetchError
                return False  # left unread, the connection closes: at most one byte was asked for
        except EmptyObject:
            return size == 0

    @asynccontextmanager
    async def _send(self, url: str, headers: dict[str, str]) -> AsyncIterator[aiohttp.ClientResponse]:
        """One GET of `url` through its host's proxy; connection faults become `Transient`."""
        # encoded=True: the signature covers the query exactly as the service wrote it
        target = URL(url, encoded=True)
        try:
            async with self._session.get(target, headers=headers, allow_redirects=False,
                                         proxy=self._proxy_for(target)) as response:
                yield response
        except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as exc:
            raise Transient(f"{type(exc).__name__} from {presign.describe(url)}") from None


async def _classify(response: aiohttp.ClientResponse, url: str) -> Body:
    if response.status in (200, 206):
        return _body(response)
    text = (await response.content.read(16 * 1024)).decode("utf-8", "replace")
    code = _first(_ERROR_CODE, text) or str(response.status)
    message = _first(_ERROR_MESSAGE, text) or response.reason or ""
    where = presign.describe(url)
    if response.status == 403 and "expired" in message.lower():
        raise UrlExpired(f"URL expired for {where}")
    if response.status == 416:
        total = _first(_UNSATISFIED_RANGE, response.headers.get("Content-Range", ""))
        if total == "0":
            raise EmptyObject(where)
    if response.status == 412:
        raise ObjectChanged(f"{where} changed on the server (412 PreconditionFailed)")
    if response.status in _TRANSIENT_STATUS or code in ("SlowDown", "InternalError", "RequestTimeout"):
        raise Transient(f"HTTP {response.status} {code}")
    raise Refused(f"HTTP {response.status} {code}: {presign.scrub(message)} ({where})")


def _body(response: aiohttp.ClientResponse) -> Body:
    etag = response.headers.get("ETag", "").strip('"') or None
    length = response.content_length
    if response.status == 200:
        if length is None:
            raise Transient("200 answer without Content-Length")
        return Body(0, length - 1, length, etag, response)
    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
    if not match or match.group(3) == "*":
        raise Transient(f"206 answer with unusable Content-Range {response.headers.get('Content-Range')!r}")
    start, end, total = int(match.group(1)), int(match.group(2)), int(match.group(3))
    if length is not None and length != end - start + 1:
        raise Transient(f"Content-Length {length} disagrees with Content-Range {start}-{end}")
    return Body(start, end, total, etag, response)


def _first(pattern: re.Pattern[str], text: str) -> str | None:
    match = pattern.search(text)
    return match.group(1) if match else None
