"""The emulator's HTTP server: SageMaker JSON 1.1 on `POST /`, presigned S3 GETs below.

Routes:
    POST /                         SageMaker.<Operation> by the X-Amz-Target header
    GET  /<bucket>/<name>/<version>/<path>   a presigned object GET (SigV4 checked)
    GET  /_emulator/stats          counters as JSON
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import random
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import anyio
from aiohttp import web

from . import api, signing
from .content import Catalog, HubObject

BUCKET = "emulator-hub"
FAULTS = {
    # object GETs
    "slowdown": "503 SlowDown instead of the object",
    "internal": "500 InternalError instead of the object",
    "reset": "the connection is aborted (RST) after half the body",
    "truncate": "the body stops cleanly after half, though Content-Length promised all of it",
    "ignore-range": "200 with the whole object instead of 206 with the range",
    "flip": "one byte of the body is flipped (headers stay right)",
    "expire-early": "403 Request has expired, though the URL's X-Amz-Expires has not run out",
    # SageMaker API calls
    "throttle": "400 ThrottlingException on an API call",
    "api-stall": "an API call hangs for --stall seconds before answering",
    "token-refused": "a NextToken used before is refused when presented again",
}
CHECKSUMS = ("sha256", "sha1", "crc32", "crc32c", "crc64nvme")
_SEND_SLICE = 64 * 1024


@dataclass(frozen=True, kw_only=True, slots=True)
class EmulatorSettings:
    """Every knob of the emulator; each is also a `mirror emulator` flag."""

    root: Path
    host: str = "127.0.0.1"
    port: int = 0
    url_ttl: int = 900  # seconds each presigned URL lives
    conn_rate: int | None = None  # bytes/s per connection; None = unthrottled (sendfile)
    latency: float = 0.0  # seconds added before every response
    page_delay: float = 0.0  # seconds added to every CreateHubContentPresignedUrls
    part_size: int | None = 8 * 1024 * 1024  # multipart ETag for files above this
    seed: int = 0
    faults: dict[str, float] = field(default_factory=dict)  # fault name -> rate, see FAULTS
    fault_budget: int | None = None  # inject at most this many faults in all (None: no limit)
    stall: float = 90.0  # seconds an "api-stall" fault hangs
    local_path_rewrites: dict[str, str] = field(default_factory=dict)  # true LocalPath -> one to report
    url_rewrites: dict[str, str] = field(default_factory=dict)  # true LocalPath -> scheme://host to report
    checksum: str | None = None  # send a full-object x-amz-checksum-<this> header
    denied_operations: tuple[str, ...] = ()  # API operations the caller "may not" call (AccessDenied)
    tls_cert: Path | None = None  # serve https with this certificate (PEM) ...
    tls_key: Path | None = None  # ... and its private key
    hubs: tuple[str, ...] = ("SageMakerPublicHub",)
    studio_users: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {"d-emulator0000": ("default-user",)}
    )


@dataclass(slots=True)
class Stats:
    bytes_served: int = 0
    requests: collections.Counter = field(default_factory=collections.Counter)
    api_calls: collections.Counter = field(default_factory=collections.Counter)
    faults: collections.Counter = field(default_factory=collections.Counter)
    in_flight: int = 0  # object GETs being answered now
    max_in_flight: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "bytes_served": self.bytes_served,
            "max_in_flight": self.max_in_flight,
            "requests": dict(sorted(self.requests.items())),  # by HTTP status, and "reset"
            "api_calls": dict(sorted(self.api_calls.items())),
            "faults": dict(sorted(self.faults.items())),
        }


class Emulator:
    """Run with `async with Emulator(settings) as emu:`; `emu.endpoint` is its base URL."""

    def __init__(self, settings: EmulatorSettings) -> None:
        self.settings = settings
        self.catalog = Catalog(settings.root, part_size=settings.part_size)
        self.stats = Stats()
        self.endpoint = ""
        self._runner: web.AppRunner | None = None
        self._api = api.SageMakerApi(self)
        self._rng = random.Random(settings.seed)
        self._faults_left = -1 if settings.fault_budget is None else settings.fault_budget
        unknown = set(settings.faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown fault(s) {sorted(unknown)}; known: {sorted(FAULTS)}")
        if settings.checksum not in (None, *CHECKSUMS):
            raise ValueError(f"unknown checksum {settings.checksum!r}; known: {CHECKSUMS}")

    def fault(self, name: str) -> bool:
        """Whether to inject fault `name` now (seeded; counted; within the budget)."""
        rate = self.settings.faults.get(name, 0.0)
        if rate <= 0 or self._rng.random() >= rate or self._faults_left == 0:
            return False
        self._faults_left -= 1
        self.stats.faults[name] += 1
        return True

    async def __aenter__(self) -> "Emulator":
        app = web.Application(client_max_size=1 << 20)
        app.router.add_post("/", self._api.handle)
        app.router.add_get("/_emulator/stats", self._stats)
        app.router.add_route("*", "/{bucket}/{key:.+}", self._object)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.SockSite(self._runner, _listen(self.settings.host, self.settings.port),
                            ssl_context=self._tls())
        await site.start()
        host, port = site._sock.getsockname()[:2]  # the real port when asked for 0
        self.endpoint = f"{'https' if self.settings.tls_cert else 'http'}://{host}:{port}"
        return self

    def _tls(self) -> ssl.SSLContext | None:
        if self.settings.tls_cert is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.settings.tls_cert, self.settings.tls_key)
        return context

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # --- URLs the API hands out ---------------------------------------------------------

    def object_url(self, name: str, version: str, obj: HubObject) -> str:
        key = quote(f"{name}/{version}{obj.local_path}", safe="/~")
        base = self.settings.url_rewrites.get(obj.local_path, self.endpoint)
        return signing.presign(f"{base}/{BUCKET}/{key}", self.settings.url_ttl)

    # --- handlers --------------------------------------------------------------------------

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats.as_json())

    async def _object(self, request: web.Request) -> web.StreamResponse:
        self.stats.in_flight += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
        try:
            return await self._answer_object(request)
        finally:
            self.stats.in_flight -= 1

    async def _answer_object(self, request: web.Request) -> web.StreamResponse:
        if self.settings.latency:
            await anyio.sleep(self.settings.latency)
        try:
            obj = self._authorized_object(request)
            self._inject_refusals()
            response = await self._serve(request, obj)
        except signing.S3Refusal as refusal:
            response = _s3_error(refusal)
        except ConnectionError:  # the client went away mid-body (or a reset was injected)
            self.stats.requests["reset"] += 1
            raise asyncio.CancelledError() from None
        self.stats.requests[str(response.status)] += 1
        return response

    def _inject_refusals(self) -> None:
        if self.fault("slowdown"):
            raise signing.S3Refusal(503, "SlowDown", "Please reduce your request rate.")
        if self.fault("internal"):
            raise signing.S3Refusal(500, "InternalError", "We encountered an internal error. Please try again.")
        if self.fault("expire-early"):
            raise signing.S3Refusal(403, "AccessDenied", "Request has expired")

    def _authorized_object(self, request: web.Request) -> HubObject:
        signing.verify(request.method, request.scheme, request.host, request.raw_path,
                       dict(request.headers), dt.datetime.now(dt.timezone.utc))
        if request.method != "GET":  # the signature covers the method, so it already failed
            raise signing.S3Refusal(405, "MethodNotAllowed", "The specified method is not allowed")
        name, _, rest = unquote(request.match_info["key"]).partition("/")
        version, _, local = rest.partition("/")
        obj = self.catalog.find(name, version, "/" + local)
        if request.match_info["bucket"] != BUCKET or obj is None:
            raise signing.S3Refusal(404, "NoSuchKey", "The specified key does not exist.")
        return obj

    async def _serve(self, request: web.Request, obj: HubObject) -> web.StreamResponse:
        etag = self.catalog.cached_etag(obj) or await anyio.to_thread.run_sync(self.catalog.etag, obj)
        headers = await self._object_headers(obj, etag)
        _check_preconditions(request, etag)
        if request.headers.get("If-None-Match", "").strip().strip('"') == etag:
            return web.Response(status=304, headers=headers)
        size = obj.size
        span = None if self.fault("ignore-range") else parse_range(request.headers.get("Range"), size)
        if span is None:
            start, length, status = 0, size, 200
        else:
            start, end = span
            length, status = end - start + 1, 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        headers["Content-Length"] = str(length)
        response = web.StreamResponse(status=status, headers=headers)
        await response.prepare(request)
        await self._send_body(request, response, obj.file, start, length)
        return response

    async def _object_headers(self, obj: HubObject, etag: str) -> dict[str, str]:
        headers = {"ETag": f'"{etag}"', "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        if obj.kms:
            headers["x-amz-server-side-encryption"] = "aws:kms"
        if self.settings.checksum:
            name = self.settings.checksum
            headers[f"x-amz-checksum-{name}"] = await anyio.to_thread.run_sync(self.catalog.checksum, obj, name)
            headers["x-amz-checksum-type"] = "FULL_OBJECT"
        return headers

    async def _send_body(self, request: web.Request, response: web.StreamResponse, file: Path,
                         start: int, length: int) -> None:
        with file.open("rb") as handle:
            cut = "reset" if self.fault("reset") else "truncate" if self.fault("truncate") else None
            if cut is not None:
                await self._send_copy(response, handle, start, length // 2)
                if cut == "reset":
                    request.transport.abort()  # RST: the client's read fails
                else:
                    request.transport.close()  # FIN: a clean end, short of Content-Length
                return
            if self.fault("flip") and length:
                await self._send_copy(response, handle, start, length, flip_at=self._rng.randrange(length))
            elif self.settings.conn_rate:
                await self._send_copy(response, handle, start, length)
            else:
                await self._send_file(request, response, handle, start, length)
        await response.write_eof()

    async def _send_file(self, request: web.Request, response: web.StreamResponse, handle,
                         start: int, length: int) -> None:
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("client went away")
        try:
            sent = await asyncio.get_running_loop().sendfile(transport, handle, start, length)
        except NotImplementedError:  # e.g. uvloop transports: copy instead
            await self._send_copy(response, handle, start, length)
            return
        self.stats.bytes_served += sent

    async def _send_copy(self, response: web.StreamResponse, handle, start: int, length: int,
                         flip_at: int | None = None) -> None:
        """Copy through Python: paced to --conn-rate, or with one byte flipped."""
        rate = self.settings.conn_rate
        handle.seek(start)
        remaining = length
        slice_size = min(_SEND_SLICE, max(1024, rate // 20)) if rate else 1 << 20
        while remaining:
            block = handle.read(min(slice_size, remaining))
            if not block:
                raise ConnectionResetError("object shrank while being served")
            if flip_at is not None and 0 <= flip_at < len(block):
                block = block[:flip_at] + bytes([block[flip_at] ^ 0xFF]) + block[flip_at + 1:]
            flip_at = None if flip_at is None else flip_at - len(block)
            await response.write(block)
            self.stats.bytes_served += len(block)
            remaining -= len(block)
            if rate:
                await anyio.sleep(len(block) / rate)


def _check_preconditions(request: web.Request, etag: str) -> None:
    if_match = request.headers.get("If-Match")
    if if_match is not None and if_match.strip().strip('"') != etag:
        raise signing.S3Refusal(412, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """S3's reading of a single `Range: bytes=...`; None serves the whole object.

    Malformed or multi-range headers are ignored (whole object), like S3 does; a range
    starting at or beyond the end is 416.
    """
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, dash, last = header[len("bytes="):].strip().partition("-")
    if not dash or not (first.isdigit() or last.isdigit()):
        return None
    if not first:  # suffix range: the last N bytes
        count = int(last)
        if count == 0 or size == 0:
            raise _unsatisfiable(size)
        return max(size - count, 0), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last.isdigit() else size - 1
    if start >= size:
        raise _unsatisfiable(size)
    if last.isdigit() and int(last) < start:
        return None
    return start, end


def _unsatisfiable(size: int) -> signing.S3Refusal:
    return signing.S3Refusal(416, "InvalidRange", "The requested range is not satisfiable",
                             {"Content-Range": f"bytes */{size}"})


def _s3_error(refusal: signing.S3Refusal) -> web.Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{refusal.code}</Code><Message>{refusal.message}</Message>"
        "<RequestId>EMULATOR</RequestId></Error>"
    )
    return web.Response(status=refusal.status, text=body, content_type="application/xml",
                        headers=refusal.headers)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock
