"""`sync()`: one mirror job, from the first page request to the last rename.

    hub.pages() ──► plan.file_job() ──► [stream, no buffer] ──► transfer.Pool

The job stream holds no buffer: the producer hands a file over only when a worker is free
to start it, and asks for the next page only when the current one is handed out. That is
the backpressure that keeps URLs from ageing in a queue. A failure to list stops the
producer but lets the files already started finish, so nothing downloaded is lost.
"""

from __future__ import annotations

import collections
import functools
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from anyio.abc import ObjectSendStream

from . import events, plan
from .config import SyncSettings
from .disk import prepare_destination
from .errors import MirrorError, UnsafeLocalPath
from .http import RangeClient
from .hub import ContentRef, HubClient, Page
from .transfer import Pool


@dataclass(frozen=True, slots=True)
class SyncResult:
    """What one `sync()` did."""

    dest: Path
    completed: dict[str, int]  # path below DEST -> size
    failed: dict[str, str] = field(default_factory=dict)  # path -> reason
    refused: dict[str, str] = field(default_factory=dict)  # LocalPath -> why it is unsafe
    bytes_downloaded: int = 0
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.refused


async def sync(settings: SyncSettings, *, observer: events.Observer = events.ignore) -> SyncResult:
    """Mirror one hub content version into `settings.dest`. Raises `MirrorError`s."""
    started = time.monotonic()
    dest = await anyio.to_thread.run_sync(prepare_destination, settings.dest)
    producer = _Producer(ContentRef.of(settings), settings.page_size)
    async with HubClient.open(settings.aws, observer) as hub, \
            RangeClient.open(connections=settings.concurrency) as client:
        pool = Pool(settings, dest, client, observer)
        send, receive = anyio.create_memory_object_stream[plan.FileJob](0)
        async with anyio.create_task_group() as group:
            group.start_soon(producer.run, hub, send, pool)
            await pool.run(receive)
    if producer.error is not None:
        raise producer.error
    return SyncResult(dest, pool.result.completed, pool.result.failures, producer.refused,
                      pool.result.bytes_written, time.monotonic() - started)


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

    def __init__(self, ref: ContentRef, page_size: int) -> None:
        self.ref = ref
        self.page_size = page_size
        self.error: MirrorError | None = None
        self.refused: dict[str, str] = {}
        self._seen: set[str] = set()

    async def run(self, hub: HubClient, send: ObjectSendStream[plan.FileJob], pool: Pool) -> None:
        async with send:
            try:
                async for page in hub.pages(self.ref, self.page_size):
                    repeated = {p for p, n in collections.Counter(page.local_paths).items() if n > 1}
                    for local_path in dict.fromkeys(page.local_paths):
                        job = self._job(local_path, page, pool, ambiguous=local_path in repeated)
                        if job is not None:
                            await send.send(job)
            except MirrorError as exc:
                self.error = exc

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
        except UnsafeLocalPath as exc:
            self._refuse(local_path, str(exc), pool)
            return None
        key = job.relative.as_posix()
        if key in self._seen:
            self._refuse(local_path, f"refused LocalPath {local_path!r}: listed twice", pool)
            return None
        self._seen.add(key)
        return job

    def _refuse(self, local_path: str, reason: str, pool: Pool) -> None:
        self.refused[local_path] = reason
        pool.emit(events.FileFailed(local_path, reason))
