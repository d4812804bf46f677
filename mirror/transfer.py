"""The bounded worker pool: ranged, streaming GETs written at their offsets.

Shape (all tasks owned by task groups; nothing is fire-and-forget):

    jobs stream ──► file worker × concurrency ──► FileDownload
                                                   ├─ head GET 0..chunk-1 (learns size, ETag)
                                                   └─ pullers × min(concurrency, spans left)
                                                      each GET holds one connection slot

Every HTTP request holds one of `concurrency` slots (a CapacityLimiter), so one huge file
can use every connection while many small files keep them all busy. The scheduler (the
pool) decides what runs and when; `FileDownload` decides how one file is fetched.
"""

from __future__ import annotations

import collections
import random
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

import anyio
from anyio.abc import ObjectReceiveStream

from . import events, http, plan
from .config import SyncSettings
from .disk import PartFile
from .errors import MirrorError
from .presign import PresignedUrl

WRITE_SIZE = 1 << 20  # gather this much before one positional write
MAX_RENEWALS = 10  # URL renewals for one span in a row before calling the clock wrong


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter: attempt n sleeps U(0, min(cap, base*2^n))."""

    base: float = 0.2
    cap: float = 15.0
    rng: Callable[[], float] = random.random

    def delay(self, attempt: int) -> float:
        return self.rng() * min(self.cap, self.base * 2 ** attempt)


@dataclass(slots=True)
class _Cursor:
    """The part of a span still to be written: `pos..end` inclusive."""

    pos: int
    end: int
    greedy: bool = False  # the head span: keep whatever extra bytes a 200 answer brings

    @property
    def done(self) -> bool:
        return self.pos > self.end


@dataclass(slots=True)
class PoolResult:
    completed: dict[str, int] = field(default_factory=dict)  # path -> size
    failures: dict[str, str] = field(default_factory=dict)  # path -> reason
    bytes_written: int = 0


class Pool:
    """Runs file jobs from a stream until it ends; one file's failure never stops others."""

    def __init__(self, settings: SyncSettings, dest: Path, client: http.RangeClient,
                 observer: events.Observer = events.ignore, *, backoff: Backoff = Backoff(),
                 sleep: Callable[[float], Awaitable[Any]] = anyio.sleep) -> None:
        self.settings = settings
        self.dest = dest
        self.client = client
        self.backoff = backoff
        self.sleep = sleep
        self.result = PoolResult()
        self.slots = anyio.CapacityLimiter(settings.concurrency)
        self.disk = anyio.CapacityLimiter(max(4, settings.concurrency))
        self._observer = observer

    def emit(self, event: events.Event) -> None:
        if isinstance(event, events.BytesWritten):
            self.result.bytes_written += event.count
        self._observer(event)

    def statistics(self) -> dict[str, int]:
        return {"requests_in_flight": int(self.slots.borrowed_tokens),
                "requests_waiting": self.slots.statistics().tasks_waiting,
                "files_completed": len(self.result.completed),
                "files_failed": len(self.result.failures)}

    async def run(self, jobs: ObjectReceiveStream[plan.FileJob]) -> PoolResult:
        async with jobs, anyio.create_task_group() as group:
            for _ in range(self.settings.concurrency):
                group.start_soon(self._file_worker, jobs.clone())
        return self.result

    async def _file_worker(self, jobs: ObjectReceiveStream[plan.FileJob]) -> None:
        async with jobs:
            async for job in jobs:
                await self._download(job)

    async def _download(self, job: plan.FileJob) -> None:
        path = job.relative.as_posix()
        try:
            size = await FileDownload(self, job).run()
        except (http.FetchError, MirrorError) as exc:
            self.record_failure(path, str(exc))
            return
        self.result.completed[path] = size
        self.emit(events.FileFinished(path, size))

    def record_failure(self, path: str, reason: str) -> None:
        self.result.failures[path] = reason
        self.emit(events.FileFailed(path, reason))


class FileDownload:
    """One file: head request, then the remaining spans in parallel, then commit."""

    def __init__(self, pool: Pool, job: plan.FileJob) -> None:
        self.pool = pool
        self.job = job
        self.path = job.relative.as_posix()
        self.part = PartFile(pool.dest, job.relative)
        self.size: int | None = None
        self.etag: str | None = None

    async def run(self) -> int:
        try:
            head = _Cursor(0, self.pool.settings.chunk_size - 1, greedy=True)
            await self._fill(head)
            assert self.size is not None
            await self._fill_all(collections.deque(plan.spans(head.end + 1, self.size, self.pool.settings.chunk_size)))
            await self._blocking(self.part.commit)
        finally:
            await self._blocking(self.part.close)
        return self.size

    async def _fill_all(self, spans: collections.deque[plan.Span]) -> None:
        """Pull spans with up to `concurrency` tasks; the first failure cancels the rest."""
        failure: BaseException | None = None

        async def pull() -> None:
            nonlocal failure
            try:
                while spans:
                    span = spans.popleft()
                    await self._fill(_Cursor(span.start, span.end))
            except (http.FetchError, MirrorError) as exc:
                failure = failure or exc
                group.cancel_scope.cancel()

        async with anyio.create_task_group() as group:
            for _ in range(min(len(spans), self.pool.settings.concurrency)):
                group.start_soon(pull)
        if failure is not None:
            raise failure

    async def _fill(self, cursor: _Cursor) -> None:
        """Write `cursor` completely, retrying transient faults and renewing expired URLs."""
        failures = renewals = 0
        while not cursor.done:
            url = await self.job.url.fresh(self.pool.settings.refresh_margin)
            try:
                await self._request(url, cursor)
                renewals = 0
            except http.UrlExpired:
                renewals += 1
                if renewals > MAX_RENEWALS:
                    raise http.Refused("every renewed URL had already expired: check the system clock") from None
                await self.job.url.renew(url)
            except http.Transient as exc:
                failures += 1
                if failures > self.pool.settings.retries:
                    raise http.Transient(f"gave up after {failures} attempts: {exc}") from None
                await self._back_off(failures, str(exc))

    async def _request(self, url: PresignedUrl, cursor: _Cursor) -> None:
        async with self.pool.slots:
            try:
                async with self.pool.client.get(url.url, cursor.pos, cursor.end, self.etag) as body:
                    await self._accept(body, cursor)
                    await self._copy(body, cursor)
            except http.EmptyObject:
                await self._learn(0, None)
                cursor.end = -1

    async def _accept(self, body: http.Body, cursor: _Cursor) -> None:
        """Check an answer against what was asked and what earlier answers said."""
        if self.size is None:
            await self._learn(body.total, body.etag)
            cursor.end = min(cursor.end, body.total - 1)
        elif body.total != self.size:
            raise http.ObjectChanged(f"size changed from {self.size} to {body.total} bytes")
        elif body.etag and self.etag and body.etag != self.etag:
            raise http.ObjectChanged(f"ETag changed from {self.etag} to {body.etag}")
        if cursor.greedy:
            cursor.end = max(cursor.end, body.end)
        if body.start > cursor.pos or body.end < cursor.end:
            raise http.Transient(f"asked for bytes {cursor.pos}-{cursor.end}, got {body.start}-{body.end}")

    async def _learn(self, size: int, etag: str | None) -> None:
        self.size, self.etag = size, etag
        await self._blocking(self.part.open, size)
        self.pool.emit(events.FileStarted(self.path, size))

    async def _copy(self, body: http.Body, cursor: _Cursor) -> None:
        """Stream the body to disk from `cursor.pos`, advancing the cursor per write."""
        skip = cursor.pos - body.start  # a 200 answer starts at 0
        pending: list[bytes] = []
        pending_size = 0
        try:
            async with aclosing(body.blocks()) as blocks:
                async for block in blocks:
                    if skip:
                        block, skip = block[skip:], max(0, skip - len(block))
                    block = block[: cursor.end - cursor.pos - pending_size + 1]
                    pending.append(block)
                    pending_size += len(block)
                    if pending_size >= WRITE_SIZE or cursor.pos + pending_size > cursor.end:
                        await self._write(pending, cursor)
                        pending, pending_size = [], 0
                    if cursor.done:
                        break
        except http.Transient:
            await self._write(pending, cursor)  # keep the good prefix; the retry starts after it
            raise
        await self._write(pending, cursor)

    async def _write(self, blocks: list[bytes], cursor: _Cursor) -> None:
        size = sum(map(len, blocks))
        if size:
            await self._blocking(self.part.write_at, blocks, cursor.pos)
            cursor.pos += size
            self.pool.emit(events.BytesWritten(self.path, size))

    async def _back_off(self, attempt: int, reason: str) -> None:
        delay = self.pool.backoff.delay(attempt)
        self.pool.emit(events.Retrying(self.path, reason, attempt, delay))
        await self.pool.sleep(delay)

    async def _blocking(self, function: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(function, *args, limiter=self.pool.disk)
