"""`sync()` and `verify()`: one mirror job, from the first page request to the manifest.

    hub.pages() ──► plan.file_job() ──► [stream, no buffer] ──► transfer.Pool

The job stream holds no buffer: the producer hands a file over only when a worker is free
to start it, and asks for the next page only when the current one is handed out. That is
the backpressure that keeps URLs from ageing in a queue. A failure to list stops the
producer but lets the files already started finish, so nothing downloaded is lost.
"""

from __future__ import annotations

import collections
import functools
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import ObjectSendStream

from . import events, plan, presign
from .config import SyncSettings
from .disk import disk_error, is_case_insensitive, prepare_destination
from .errors import MirrorError, UnsafeLocalPath, UnsafeUrl
from .http import RangeClient
from .hub import ContentRef, HubClient, Page
from .journal import DestinationLock, Journal
from .manifest import VerifyReport, check_file, files_on_disk, read_manifest, write_manifest
from .paths import PART_SUFFIX
from .transfer import Pool


@dataclass(frozen=True, slots=True)
class SyncResult:
    """What one `sync()` did."""

    dest: Path
    completed: dict[str, int]  # path below DEST -> size: fetched, or verified earlier and unchanged
    failed: dict[str, str] = field(default_factory=dict)  # path -> reason
    refused: dict[str, str] = field(default_factory=dict)  # LocalPath -> why it is unsafe
    skipped: list[str] = field(default_factory=list)  # unchanged since the last run: not downloaded
    unverified: dict[str, str] = field(default_factory=dict)  # path -> why nothing could verify it
    extra: list[str] = field(default_factory=list)  # under DEST but no longer listed
    deleted: list[str] = field(default_factory=list)  # extra files removed (--delete)
    bytes_downloaded: int = 0
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.refused


async def sync(settings: SyncSettings, *, observer: events.Observer = events.ignore) -> SyncResult:
    """Mirror one hub content version into `settings.dest`. Raises `MirrorError`s."""
    started = time.monotonic()
    dest = await anyio.to_thread.run_sync(prepare_destination, settings.dest)
    async with _locked_journal(dest) as journal:
        records = await anyio.to_thread.run_sync(journal.records)
        folds_case = await anyio.to_thread.run_sync(is_case_insensitive, dest)
        producer = _Producer(settings, plan.ListedPaths(case_insensitive=folds_case))
        async with HubClient.open(settings.aws, observer) as hub, \
                RangeClient.open(connections=settings.concurrency) as client:
            pool = Pool(settings, dest, client, journal, records, observer)
            send, receive = anyio.create_memory_object_stream[plan.FileJob](0)
            async with anyio.create_task_group() as group:
                group.start_soon(producer.run, hub, send, pool)
                await pool.run(receive)
        await anyio.to_thread.run_sync(_write_manifest, dest, settings, journal, producer.listed)
        if pool.fatal is not None:
            raise pool.fatal
        if producer.error is not None:
            raise producer.error  # never judge extras against an incomplete listing
        extra = await anyio.to_thread.run_sync(_extra_files, dest, producer.listed)
        deleted = await anyio.to_thread.run_sync(_delete, dest, extra, journal) if settings.delete else []
    for path in extra:
        observer(events.ExtraFile(path, deleted=path in deleted))
    outcome = pool.result
    return SyncResult(dest, outcome.completed, outcome.failures, producer.refused, outcome.skipped,
                      outcome.unverified, extra, deleted, outcome.bytes_written, time.monotonic() - started)


async def verify(dest: Path, *, observer: events.Observer = events.ignore) -> VerifyReport:
    """Re-hash every file under DEST against its manifest: what differs, is missing, is extra."""
    dest = dest.resolve()
    report = VerifyReport()
    async with _locked_journal(dest):
        document = await anyio.to_thread.run_sync(read_manifest, dest)
        entries: dict[str, Any] = document["files"]
        limiter = anyio.CapacityLimiter(4)

        async def check(path: str) -> None:
            problem = await anyio.to_thread.run_sync(check_file, dest, path, entries[path], limiter=limiter)
            report.checked += 1
            if problem == "missing":
                report.missing.append(path)
            elif problem is not None:
                report.differs[path] = problem

        async with anyio.create_task_group() as group:
            for path in entries:
                group.start_soon(check, path)
        on_disk = await anyio.to_thread.run_sync(files_on_disk, dest)
    report.extra = sorted(on_disk - set(entries))
    report.missing.sort()
    return report


@asynccontextmanager
async def _locked_journal(dest: Path) -> AsyncIterator[Journal]:
    lock = DestinationLock(dest)
    await anyio.to_thread.run_sync(lock.acquire)
    try:
        journal = await anyio.to_thread.run_sync(Journal.open, dest)
        try:
            yield journal
        finally:
            journal.close()  # quick, and must happen even while the run is being cancelled
    finally:
        lock.release()


def _write_manifest(dest: Path, settings: SyncSettings, journal: Journal, listed: set[str]) -> None:
    content = {"hub": settings.hub, "type": settings.content_type, "name": settings.name,
               "version": settings.version}
    records = journal.records()
    write_manifest(dest, content, [r for path, r in records.items() if path in listed and r.state == "complete"])


def _extra_files(dest: Path, listed: set[str]) -> list[str]:
    """Files under DEST that the listing does not name (a listed file's `.part` is kept)."""
    keep = listed | {path + PART_SUFFIX for path in listed}
    return sorted(files_on_disk(dest) - keep)


def _delete(dest: Path, extra: list[str], journal: Journal) -> list[str]:
    """Remove extra files (links themselves, never their targets) and emptied folders."""
    for path in extra:
        target = dest / path
        try:
            os.unlink(target)
        except OSError as exc:
            raise disk_error(exc, target) from exc
        journal.forget(path)
        _remove_empty_parents(dest, target.parent)
    return extra


def _remove_empty_parents(dest: Path, directory: Path) -> None:
    while directory != dest and directory.is_relative_to(dest):
        try:
            directory.rmdir()
        except OSError:
            return  # not empty (or not ours to remove): stop here
        directory = directory.parent


def sync_blocking(settings: SyncSettings, *, observer: events.Observer = events.ignore) -> SyncResult:
    """`sync()` for code without an event loop; runs on uvloop where it is installed."""
    return anyio.run(functools.partial(sync, settings, observer=observer), backend_options=loop_options())


def loop_options() -> dict[str, bool]:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}


class _Producer:
    """Pages the listing into the job stream; keeps the first listing error for later."""

    def __init__(self, settings: SyncSettings, listed: plan.ListedPaths) -> None:
        self.ref = ContentRef.of(settings)
        self.settings = settings
        self.error: MirrorError | None = None
        self.refused: dict[str, str] = {}
        self._listed = listed

    @property
    def listed(self) -> set[str]:
        """Paths below DEST of every accepted entry."""
        return self._listed.paths

    async def run(self, hub: HubClient, send: ObjectSendStream[plan.FileJob], pool: Pool) -> None:
        async with send:
            try:
                async for page in hub.pages(self.ref, self.settings.page_size):
                    repeated = {p for p, n in collections.Counter(page.local_paths).items() if n > 1}
                    for local_path in dict.fromkeys(page.local_paths):
                        job = self._job(local_path, page, pool, ambiguous=local_path in repeated)
                        if job is not None:
                            await send.send(job)
            except MirrorError as exc:
                self.error = exc
            except anyio.BrokenResourceError:
                pass  # the pool stopped (a fatal disk error): nothing more to hand out

    def _job(self, local_path: str, page: Page, pool: Pool, *, ambiguous: bool) -> plan.FileJob | None:
        """A job, or None after recording why the entry is refused.

        A LocalPath listed twice is ambiguous (which URL is the file?): within one page
        every copy is refused; across pages the first is kept and later ones refused.
        """
        if ambiguous:
            self._refuse(local_path, f"refused LocalPath {local_path!r}: listed twice", pool)
            return None
        try:
            job = plan.file_job(local_path, page.lease(local_path))
            presign.check_url(page.urls[local_path].url, allow_http=self.settings.allow_http,
                              allow_hosts=self.settings.allow_hosts)
        except (UnsafeLocalPath, UnsafeUrl) as exc:
            self._refuse(local_path, str(exc), pool)
            return None
        conflict = self._listed.conflict(job.relative)
        if conflict is not None:
            self._refuse(local_path, f"refused LocalPath {local_path!r}: {conflict}", pool)
            return None
        self._listed.add(job.relative)
        return job

    def _refuse(self, local_path: str, reason: str, pool: Pool) -> None:
        self.refused[local_path] = reason
        pool.emit(events.FileFailed(local_path, reason))
