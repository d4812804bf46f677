"""The bounded worker pool: ranged, streaming GETs written at their offsets, verified.

Shape (all tasks owned by task groups; nothing is fire-and-forget):

    jobs stream ──► file worker × concurrency ──► FileDownload
                                                   ├─ first GET (learns size, ETag, checks)
                                                   ├─ pullers × min(concurrency, spans left)
                                                   │    each GET holds one connection slot
                                                   └─ hasher: reads the written prefix back
                                                        from the page cache and hashes it

Every HTTP request holds one of the `concurrency` connections of the HTTP client's pool
(its connector's limit, a FIFO queue), so one huge file can use every connection while
many small files keep them all busy. The pool decides what
runs and when; `FileDownload` decides how one file is fetched, checked and committed.
"""

from __future__ import annotations

import functools
import random
import time
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

import anyio
from anyio.abc import ObjectReceiveStream

from . import events, http, integrity, plan
from .config import SyncSettings
from .disk import PartFile, sync_filesystem
from .errors import DiskError, MirrorError, Unverified
from .journal import Completion, FileRecord, Journal
from .presign import PresignedUrl

WRITE_SIZE = 1 << 20  # gather this much before one positional write
MAX_RENEWALS = 10  # URL renewals for one request in a row before calling the clock wrong
MAX_DOWNLOADS = 3  # whole-file downloads (after a checksum mismatch or a change) before failing
SMALL_FILE = 1 << 20  # a file this small that arrives whole is stored, hashed and renamed in one step
FLUSH_INTERVAL = 1.0  # seconds between durable batches of completed files
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter: attempt n sleeps U(0, min(cap, base*2^n))."""

    base: float = 0.2
    cap: float = 15.0
    rng: Callable[[], float] = random.random

    def delay(self, attempt: int) -> float:
        return self.rng() * min(self.cap, self.base * 2 ** attempt)


class Restart(Exception):
    """Start the file again from zero: the object changed or its bytes did not verify."""


_EXPECTED_FAILURES = (http.FetchError, MirrorError, Restart)


async def _first_failure(*tasks: Callable[[], Awaitable[None]]) -> None:
    """Run tasks together; the first failure cancels the others and is raised as it is."""
    failure: BaseException | None = None

    async def guarded(task: Callable[[], Awaitable[None]]) -> None:
        nonlocal failure
        try:
            await task()
        except _EXPECTED_FAILURES as exc:
            failure = failure or exc
            group.cancel_scope.cancel()

    async with anyio.create_task_group() as group:
        for task in tasks:
            group.start_soon(guarded, task)
    if failure is not None:
        raise failure


@dataclass(slots=True)
class _Cursor:
    """The part of a span still to be written: `pos..end` inclusive."""

    pos: int
    end: int
    greedy: bool = False  # the first span: keep whatever extra bytes a 200 answer brings

    @property
    def done(self) -> bool:
        return self.pos > self.end


class Bandwidth:
    """A total rate limit shared by every connection (--max-bandwidth).

    Each block received books the next free slot on one timeline; the reader sleeps until
    its slot, and since it reads nothing meanwhile, TCP slows the sender down.
    """

    BURST = 0.25  # seconds of traffic that may go at once after an idle spell

    def __init__(self, rate: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._free_at = clock() - self.BURST

    def delay(self, count: int) -> float:
        """Book `count` bytes; how long to wait before taking more."""
        now = self._clock()
        self._free_at = max(self._free_at, now - self.BURST) + count / self.rate
        return max(0.0, self._free_at - now)


@dataclass(slots=True)
class PoolResult:
    completed: dict[str, int] = field(default_factory=dict)  # path -> size (fetched or unchanged)
    skipped: list[str] = field(default_factory=list)  # unchanged since the last run
    unverified: dict[str, str] = field(default_factory=dict)  # path -> why
    failures: dict[str, str] = field(default_factory=dict)  # path -> reason
    planned: dict[str, str] = field(default_factory=dict)  # --dry-run: path -> action
    bytes_written: int = 0


class Pool:
    """Runs file jobs from a stream until it ends; one file's failure never stops others."""

    def __init__(self, settings: SyncSettings, dest: Path, client: http.RangeClient, journal: Journal,
                 records: dict[str, FileRecord], observer: events.Observer = events.ignore, *,
                 backoff: Backoff = Backoff(), sleep: Callable[[float], Awaitable[Any]] = anyio.sleep) -> None:
        self.settings = settings
        self.dest = dest
        self.client = client
        self.journal = journal
        self.records = records
        self.backoff = backoff
        self.sleep = sleep
        self.result = PoolResult()
        self.disk = anyio.CapacityLimiter(max(4, settings.concurrency))
        self._observer = observer
        self._pending: list[Completion] = []
        self._workers: anyio.CancelScope | None = None
        self.fatal: DiskError | None = None  # a disk error that stopped the whole run
        self._bandwidth = Bandwidth(settings.max_bandwidth) if settings.max_bandwidth else None

    async def throttle(self, count: int) -> None:
        if self._bandwidth is not None:
            delay = self._bandwidth.delay(count)
            if delay > 0:
                await self.sleep(delay)

    def plan(self, path: str, action: str, detail: str = "") -> None:
        self.result.planned[path] = action
        self.emit(events.FilePlanned(path, action, detail))

    def emit(self, event: events.Event) -> None:
        if isinstance(event, events.BytesWritten):
            self.result.bytes_written += event.count
        self._observer(event)

    async def blocking(self, function: Callable[..., T], *args: Any) -> T:
        """Run disk, hashing or journal work in a worker thread."""
        return await anyio.to_thread.run_sync(function, *args, limiter=self.disk)

    async def run(self, jobs: ObjectReceiveStream[plan.FileJob]) -> PoolResult:
        """Work until the stream ends, a fatal disk error stops it (see `fatal`), or the
        caller cancels; completed files are journalled in every case."""
        workers_done = anyio.Event()
        try:
            async with jobs, anyio.create_task_group() as outer:
                outer.start_soon(self._flush_periodically, workers_done)
                async with anyio.create_task_group() as workers:
                    self._workers = workers.cancel_scope
                    for _ in range(self.settings.concurrency):
                        workers.start_soon(self._file_worker, jobs.clone())
                workers_done.set()
        finally:
            with anyio.CancelScope(shield=True):  # a cancelled run still records what it finished
                await self._flush()
        return self.result

    def add_completion(self, completion: Completion) -> None:
        self._pending.append(completion)

    async def _flush_periodically(self, workers_done: anyio.Event) -> None:
        """Make completed files durable in batches: one syncfs and one transaction each."""
        while not workers_done.is_set():
            with anyio.move_on_after(FLUSH_INTERVAL):
                await workers_done.wait()
            await self._flush()

    async def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if batch:
            await self.blocking(self._make_durable, batch)

    def _make_durable(self, batch: list[Completion]) -> None:
        sync_filesystem(self.dest)
        self.journal.complete(batch)

    async def _file_worker(self, jobs: ObjectReceiveStream[plan.FileJob]) -> None:
        async with jobs:
            async for job in jobs:
                await self._download(job)

    async def _download(self, job: plan.FileJob) -> None:
        path = job.relative.as_posix()
        try:
            await FileDownload(self, job).run()
        except (http.FetchError, MirrorError) as exc:
            self.record_failure(path, str(exc))
            if isinstance(exc, DiskError) and exc.fatal and self.fatal is None:
                self.fatal = exc  # every other file would fail the same way: stop now
                assert self._workers is not None
                self._workers.cancel()

    def record_failure(self, path: str, reason: str) -> None:
        self.result.failures[path] = reason
        self.emit(events.FileFailed(path, reason))


class FileDownload:
    """One file: decide, fetch (or resume), verify while fetching, commit or start again."""

    def __init__(self, pool: Pool, job: plan.FileJob) -> None:
        self.pool = pool
        self.job = job
        self.path = job.relative.as_posix()
        self.part = PartFile(pool.dest, job.relative)
        self.record = pool.records.get(self.path)
        self.size: int | None = None
        self.etag: str | None = None
        self.expectation: integrity.Expectation | None = None
        self.coverage = plan.Coverage()
        self._progress: anyio.Event | None = None  # set by writes while a hasher waits for them
        self._whole: integrity.Verdict | None = None  # set when a small file arrived in one answer
        self._committed_mtime: int | None = None  # set when that small file was renamed in place

    async def run(self) -> None:
        final_stat, part_stat = await self.pool.blocking(self.part.stats) if self.record else (None, None)
        action = plan.decide(self.record, final_stat, part_stat)
        if self.pool.settings.dry_run:
            await self._plan_only(action)
            return
        if action is plan.Action.PROBE and await self._unchanged():
            self.pool.result.completed[self.path] = self.record.size
            self.pool.result.skipped.append(self.path)
            if self.record.verified is None:  # unchanged, and still never verified: say so again
                self.pool.result.unverified[self.path] = self.record.detail or "not verified"
            self.pool.emit(events.FileSkipped(self.path, self.record.size))
            return
        if action is plan.Action.PROBE:
            self.pool.emit(events.FileRestarted(self.path, "changed on the server since the last run"))
        if action is plan.Action.ADOPT:
            await self.pool.blocking(self.part.adopt)
        await self._fetch_verified(resume=action in (plan.Action.RESUME, plan.Action.ADOPT),
                                   adopted=action is plan.Action.ADOPT)

    async def _plan_only(self, action: plan.Action) -> None:
        """--dry-run: say what would happen, touching nothing (a probe moves no payload)."""
        if action is plan.Action.PROBE:
            unchanged = await self._unchanged()
            self.pool.plan(self.path, "skip" if unchanged else "refetch",
                           "unchanged" if unchanged else "changed on the server")
        elif action in (plan.Action.RESUME, plan.Action.ADOPT):
            self.pool.plan(self.path, "resume", "partial download on disk")
        else:
            self.pool.plan(self.path, "fetch")

    async def _fetch_verified(self, *, resume: bool, adopted: bool = False) -> None:
        for download in range(1, MAX_DOWNLOADS + 1):
            try:
                verdict = await self._fetch(resume=resume and download == 1, adopted=adopted and download == 1)
                if verdict.ok is False:
                    raise Restart(f"checksum mismatch: {verdict.detail}")
                await self._commit(verdict)
                return
            except Restart as why:
                await self._forget()
                if download == MAX_DOWNLOADS:
                    raise http.Refused(f"{why} (after {MAX_DOWNLOADS} downloads)") from None
                self.pool.emit(events.FileRestarted(self.path, str(why)))
            finally:
                self.part.close()  # a plain close(2): safe even while being cancelled

    async def _fetch(self, *, resume: bool, adopted: bool) -> integrity.Verdict:
        """Fill the `.part` file and hash it; the verdict of the hash."""
        chunk = self.pool.settings.chunk_size
        if resume:
            await self._resume(adopted)
        else:
            await self._fill(_Cursor(0, chunk - 1, greedy=True))
            if self._whole is not None:
                return self._whole
        assert self.size is not None and self.expectation is not None
        hasher = integrity.FileHasher(self.expectation)
        spans = self.coverage.missing(self.size, chunk)
        await _first_failure(functools.partial(self._hash_along, hasher), functools.partial(self._fill_all, spans))
        verdict = hasher.verdict()
        if verdict.ok is False and len(self.expectation.part_sizes) > 1:
            other = await self.pool.blocking(integrity.verify_other_part_sizes, self.part.read_at, self.size,
                                             self.expectation)
            verdict = other or verdict
        return verdict

    async def _resume(self, adopted: bool) -> None:
        """Continue a `.part` from its recorded spans; an adopted file is all there, to re-check."""
        record = self.record
        assert record is not None
        self.size, self.etag = record.size, record.etag
        self.expectation = integrity.Expectation.from_json(record.expect) if record.expect \
            else integrity.expectation_for(record.size, record.etag, {})
        spans = [(0, record.size - 1)] if adopted else await self.pool.blocking(self.pool.journal.spans, self.path)
        self.coverage = plan.Coverage(spans)
        await self.pool.blocking(functools.partial(self.part.open, record.size, resume=True))
        self.pool.emit(events.FileStarted(self.path, record.size, resumed_bytes=self.coverage.prefix()))

    async def _unchanged(self) -> bool:
        """Whether the object still has the ETag recorded when it was last fetched."""
        record = self.record
        assert record is not None

        async def probe(url: PresignedUrl) -> bool:
            return await self.pool.client.unchanged(url.url, record.etag, record.size)

        return await self._retrying(probe)

    # --- fetching ---------------------------------------------------------------------------

    async def _fill_all(self, spans: list[plan.Span]) -> None:
        """Pull spans with up to `concurrency` tasks; the first failure cancels the rest."""
        queue = iter(spans)

        async def pull() -> None:
            for span in queue:
                await self._fill(_Cursor(span.start, span.end))

        await _first_failure(*[pull] * min(len(spans), self.pool.settings.concurrency))

    async def _fill(self, cursor: _Cursor) -> None:
        """Write `cursor` completely, then record it in the journal."""
        start = cursor.pos
        await self._retrying(lambda url: self._request(url, cursor))
        if self.size and not self.coverage.complete(self.size):
            await self.pool.blocking(self.pool.journal.add_span, self.path, start, cursor.end)

    async def _retrying(self, attempt: Callable[[PresignedUrl], Awaitable[T]]) -> T:
        """Run one request, retrying transient faults and renewing expired URLs."""
        failures = renewals = 0
        while True:
            url = await self.job.url.fresh(self.pool.settings.refresh_margin)
            try:
                return await attempt(url)
            except http.UrlExpired:
                renewals += 1
                if renewals > MAX_RENEWALS:
                    raise http.Refused("every renewed URL had already expired: check the system clock") from None
                await self.job.url.renew(url)
            except http.ObjectChanged as exc:
                raise Restart(str(exc)) from None
            except http.Transient as exc:
                failures += 1
                if failures > self.pool.settings.retries:
                    raise http.Transient(f"gave up after {failures} attempts: {exc}") from None
                await self._back_off(failures, str(exc))

    async def _request(self, url: PresignedUrl, cursor: _Cursor) -> None:
        try:
            async with self.pool.client.get(url.url, cursor.pos, cursor.end, self.etag) as body:
                if self.size is None and body.start == 0 and body.end == body.total - 1 < SMALL_FILE:
                    data = await body.read_all()
                    await self.pool.throttle(len(data))
                    await self._store_whole(body.total, body.etag, body.headers, data)
                    cursor.end = -1
                    return
                await self._accept(body, cursor)
                await self._copy(body, cursor)
        except http.EmptyObject:
            if self.size not in (None, 0):
                raise Restart(f"the object is now empty (was {self.size} bytes)") from None
            await self._store_whole(0, None, {}, b"")
            cursor.end = -1

    async def _store_whole(self, size: int, etag: str | None, headers: Any, data: bytes) -> None:
        """A small file that arrived in one answer: write, hash and judge it in one step.

        Nothing is journalled before it completes: there is nothing worth resuming.
        """
        self.size, self.etag = size, etag
        self.expectation = integrity.expectation_for(size, etag, headers)
        self.coverage.add(0, size - 1)
        self.pool.emit(events.FileStarted(self.path, size))
        self._whole, self._committed_mtime = await self.pool.blocking(self._write_hash_commit, data,
                                                                      self.expectation)
        self.pool.emit(events.BytesWritten(self.path, size))

    def _write_hash_commit(self, data: bytes, expectation: integrity.Expectation) -> tuple[integrity.Verdict, int | None]:
        """One trip to a worker thread for a whole small file; renamed at once if acceptable."""
        self.part.open(len(data), reserve=False)
        self.part.write_at([data], 0)
        hasher = integrity.FileHasher(expectation)
        hasher.update(data)
        verdict = hasher.verdict()
        acceptable = verdict.ok or (verdict.ok is None and not self.pool.settings.require_verified)
        return verdict, self.part.commit() if acceptable else None

    async def _accept(self, body: http.Body, cursor: _Cursor) -> None:
        """Check an answer against what was asked and what earlier answers said."""
        if self.size is None:
            await self._learn(body.total, body.etag, body.headers)
            cursor.end = min(cursor.end, body.total - 1)
        elif body.total != self.size:
            raise Restart(f"the object changed size from {self.size} to {body.total} bytes")
        elif body.etag and self.etag and body.etag != self.etag:
            raise Restart(f"the object's ETag changed from {self.etag} to {body.etag}")
        if cursor.greedy:
            cursor.end = max(cursor.end, body.end)
        if body.start > cursor.pos or body.end < cursor.end:
            raise http.Transient(f"asked for bytes {cursor.pos}-{cursor.end}, got {body.start}-{body.end}")

    async def _learn(self, size: int, etag: str | None, headers: Any) -> None:
        """The first answer of a fresh download: open the `.part` and journal the file."""
        self.size, self.etag = size, etag
        self.expectation = integrity.expectation_for(size, etag, headers)
        await self.pool.blocking(self.part.open, size)
        await self.pool.blocking(self.pool.journal.start, self.path, size, etag, self.expectation.to_json())
        self.pool.emit(events.FileStarted(self.path, size))

    async def _copy(self, body: http.Body, cursor: _Cursor) -> None:
        """Stream the body to disk from `cursor.pos`, advancing the cursor per write."""
        skip = cursor.pos - body.start  # a 200 answer starts at 0
        pending: list[bytes] = []
        pending_size = 0
        try:
            async with aclosing(body.blocks()) as blocks:
                async for block in blocks:
                    await self.pool.throttle(len(block))
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
            await self.pool.blocking(self.part.write_at, blocks, cursor.pos)
            self.coverage.add(cursor.pos, cursor.pos + size - 1)
            cursor.pos += size
            if self._progress is not None:
                self._progress.set()
            self.pool.emit(events.BytesWritten(self.path, size))

    async def _back_off(self, attempt: int, reason: str) -> None:
        delay = self.pool.backoff.delay(attempt)
        self.pool.emit(events.Retrying(self.path, reason, attempt, delay))
        await self.pool.sleep(delay)

    # --- verifying and committing ------------------------------------------------------------

    async def _hash_along(self, hasher: integrity.FileHasher) -> None:
        """Hash the file front to back as its contiguous written prefix grows."""
        assert self.size is not None
        while hasher.position < self.size:
            progressed = self._progress = anyio.Event()
            frontier = self.coverage.prefix()
            if frontier > hasher.position:
                await self.pool.blocking(self._hash_to, hasher, frontier)
            else:
                await progressed.wait()

    def _hash_to(self, hasher: integrity.FileHasher, frontier: int) -> None:
        while hasher.position < frontier:
            count = min(integrity.READ_SIZE, frontier - hasher.position)
            hasher.update(self.part.read_at(hasher.position, count))

    async def _commit(self, verdict: integrity.Verdict) -> None:
        assert self.size is not None
        if verdict.ok is None and self.pool.settings.require_verified:
            await self._forget()
            raise Unverified(f"unverified ({verdict.detail}) and --require-verified is set")
        assert self.expectation is not None
        mtime_ns = self._committed_mtime
        if mtime_ns is None:
            mtime_ns = await self.pool.blocking(self.part.commit)
        self.pool.add_completion(Completion(self.path, self.size, self.etag, self.expectation.to_json(), verdict.ok,
                                            verdict.method, verdict.detail, verdict.sha256, mtime_ns))
        self.pool.result.completed[self.path] = self.size
        if verdict.ok is None:
            self.pool.result.unverified[self.path] = verdict.detail
        self.pool.emit(events.FileFinished(self.path, self.size, verdict.method if verdict.ok else
                                           f"unverified: {verdict.detail}"))

    async def _forget(self) -> None:
        """Drop the `.part` and its journal entry; the next download starts from zero."""
        await self.pool.blocking(self.part.discard)
        await self.pool.blocking(self.pool.journal.forget, self.path)
        self.size = self.etag = self.expectation = self._whole = self._committed_mtime = None
        self.coverage = plan.Coverage()
