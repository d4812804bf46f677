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
from .config import AwsSettings, SyncSettings
from .disk import disk_error, is_case_insensitive, prepare_destination, prewarm
from .errors import MirrorError, UnsafeLocalPath, UnsafeUrl
from .http import EmptyObject, RangeClient
from .hub import ContentRef, HubClient, Page
from .journal import DestinationLock, Journal
from .manifest import VerifyReport, check_file, files_on_disk, read_manifests, write_manifest
from .paths import PART_SUFFIX
from .presign import PresignedUrl
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
    planned: dict[str, str] = field(default_factory=dict)  # --dry-run: path -> what would happen
    version: str | None = None  # the version mirrored; None when "latest" could not be resolved
    bytes_downloaded: int = 0
    retries: int = 0
    url_refreshes: int = 0
    prewarmed_bytes: int = 0
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.refused

    @property
    def verified(self) -> list[str]:
        """Files whose bytes matched the server's ETag or checksum (this run or earlier)."""
        return [path for path in self.completed if path not in self.unverified]


async def sync(settings: SyncSettings, *, observer: events.Observer = events.ignore) -> SyncResult:
    """Mirror one hub content version into `settings.dest`. Raises `MirrorError`s.

    With `dry_run` nothing is written: DEST is not even created, and the journal is read as
    it is; each file's fate arrives as a `FilePlanned` event and in `SyncResult.planned`.
    """
    started = time.monotonic()
    counts = _Counts(observer)
    dest = settings.dest.resolve() if settings.dry_run else \
        await anyio.to_thread.run_sync(prepare_destination, settings.dest)
    suffix = plan.state_suffix(settings.shard)
    async with _locked_journal(dest, suffix, read_only=settings.dry_run) as journal:
        ref, producer, pool = await _transfer(settings, dest, journal, counts)
        if not settings.dry_run:
            await anyio.to_thread.run_sync(_write_manifest, dest, ref, journal, producer.listed, suffix)
        if pool.fatal is not None:
            raise pool.fatal
        if producer.error is not None:
            raise producer.error  # never judge extras against an incomplete listing
        extra, deleted = await _tidy(settings, dest, producer.listed, journal, pool)
        prewarmed = await anyio.to_thread.run_sync(prewarm, dest, list(pool.result.completed)) \
            if settings.prewarm and not settings.dry_run else 0
    for path in extra:
        observer(events.ExtraFile(path, deleted=path in deleted))
    outcome = pool.result
    return SyncResult(dest, outcome.completed, outcome.failures, producer.refused, outcome.skipped,
                      outcome.unverified, extra, deleted, outcome.planned, ref.version, outcome.bytes_written,
                      counts.retries, counts.url_refreshes, prewarmed, time.monotonic() - started)


async def _transfer(settings: SyncSettings, dest: Path, journal: Journal,
                    observer: events.Observer) -> tuple[ContentRef, "_Producer", Pool]:
    """Resolve the version, then page the listing into the pool until both are done."""
    records = await anyio.to_thread.run_sync(journal.records)
    folds_case = not settings.dry_run and await anyio.to_thread.run_sync(is_case_insensitive, dest)
    async with HubClient.open(settings.aws, observer) as hub, \
            RangeClient.open(connections=settings.concurrency, per_host=settings.per_host_connections,
                             ca_bundle=settings.aws.ca_bundle) as client:
        ref = ContentRef.of(settings)
        ref = ref if ref.version is not None else ref.at(await hub.latest_version(ref))
        producer = _Producer(settings, ref, plan.ListedPaths(case_insensitive=folds_case))
        pool = Pool(settings, dest, client, journal, records, observer)
        send, receive = anyio.create_memory_object_stream[plan.FileJob](0)
        async with anyio.create_task_group() as group:
            group.start_soon(producer.run, hub, send, pool)
            await pool.run(receive)
    return ref, producer, pool


async def _tidy(settings: SyncSettings, dest: Path, listed: set[str], journal: Journal,
                pool: Pool) -> tuple[list[str], list[str]]:
    """Extra files under DEST (none are known to one shard); deleted with --delete."""
    if settings.shard is not None or not dest.is_dir():
        return [], []
    extra = await anyio.to_thread.run_sync(_extra_files, dest, listed)
    if settings.dry_run:
        for path in extra if settings.delete else []:
            pool.plan(path, "delete", "no longer listed")
        return extra, []
    deleted = await anyio.to_thread.run_sync(_delete, dest, extra, journal) if settings.delete else []
    return extra, deleted


class _Counts:
    """Passes events on, counting retries and URL renewals for the result."""

    def __init__(self, observer: events.Observer) -> None:
        self.observer = observer
        self.retries = self.url_refreshes = 0

    def __call__(self, event: events.Event) -> None:
        if isinstance(event, events.Retrying):
            self.retries += 1
        elif isinstance(event, events.UrlsRefreshed):
            self.url_refreshes += 1
        self.observer(event)


@dataclass(frozen=True, slots=True)
class Listing:
    version: str | None  # None: "latest" could not be resolved (no ListHubContentVersions permission)
    files: list[tuple[str, int | None]]  # (path below DEST, size if probed)
    refused: dict[str, str] = field(default_factory=dict)  # LocalPath -> why it would not be mirrored


async def list_content(ref: ContentRef, aws: AwsSettings, path_filter: plan.PathFilter, *,
                       probe_sizes: bool = False, concurrency: int = 16) -> Listing:
    """The files of a content version, without downloading them (sizes by an empty ranged GET)."""
    async with HubClient.open(aws) as hub, RangeClient.open(connections=concurrency,
                                                           ca_bundle=aws.ca_bundle) as client:
        ref = ref if ref.version is not None else ref.at(await hub.latest_version(ref))
        entries: list[tuple[str, PresignedUrl]] = []
        refused: dict[str, str] = {}
        async for page in hub.pages(ref, 100):
            for local_path, url in page.urls.items():
                try:
                    relative = plan.file_job(local_path, page.lease(local_path)).relative.as_posix()
                except UnsafeLocalPath as exc:
                    refused[local_path] = str(exc)
                    continue
                if path_filter.keeps(relative):
                    entries.append((relative, url))
        sizes: dict[str, int | None] = {path: None for path, _ in entries}
        if probe_sizes:
            async with anyio.create_task_group() as group:
                for path, url in entries:
                    group.start_soon(_probe_size, client, url, path, sizes)
    return Listing(ref.version, sorted(sizes.items()), refused)


async def _probe_size(client: RangeClient, url: PresignedUrl, path: str, sizes: dict[str, int | None]) -> None:
    try:
        async with client.get(url.url, 0, 0, None) as body:
            sizes[path] = body.total
    except EmptyObject:
        sizes[path] = 0


async def verify(dest: Path, *, observer: events.Observer = events.ignore) -> VerifyReport:
    """Re-hash every file under DEST against its manifest: what differs, is missing, is extra."""
    dest = dest.resolve()
    report = VerifyReport()
    async with _locked_journal(dest):
        entries: dict[str, Any] = await anyio.to_thread.run_sync(read_manifests, dest)
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
async def _locked_journal(dest: Path, suffix: str = "", *, read_only: bool = False) -> AsyncIterator[Journal]:
    """The journal, under the destination's lock (a read-only look needs no lock)."""
    if read_only:
        journal = await anyio.to_thread.run_sync(functools.partial(Journal.open, dest, suffix, read_only=True))
        try:
            yield journal
        finally:
            journal.close()
        return
    lock = DestinationLock(dest, suffix)
    await anyio.to_thread.run_sync(lock.acquire)
    try:
        journal = await anyio.to_thread.run_sync(Journal.open, dest, suffix)
        try:
            yield journal
        finally:
            journal.close()  # quick, and must happen even while the run is being cancelled
    finally:
        lock.release()


def _write_manifest(dest: Path, ref: ContentRef, journal: Journal, listed: set[str], suffix: str) -> None:
    content = {"hub": ref.hub, "type": ref.content_type, "name": ref.name, "version": ref.version}
    records = journal.records()
    write_manifest(dest, content, [r for path, r in records.items() if path in listed and r.state == "complete"],
                   suffix)


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

    def __init__(self, settings: SyncSettings, ref: ContentRef, listed: plan.ListedPaths) -> None:
        self.ref = ref
        self.settings = settings
        self.error: MirrorError | None = None
        self.refused: dict[str, str] = {}
        self._listed = listed
        self._filter = plan.PathFilter(settings.include, settings.exclude)

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
            if not self._wanted(job.relative.as_posix()):
                return None
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

    def _wanted(self, relative: str) -> bool:
        """Kept by --include/--exclude, and in this run's shard."""
        return self._filter.keeps(relative) and plan.in_shard(relative, self.settings.shard)

    def _refuse(self, local_path: str, reason: str, pool: Pool) -> None:
        self.refused[local_path] = reason
        pool.emit(events.FileFailed(local_path, reason))
