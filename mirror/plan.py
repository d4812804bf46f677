"""What to fetch: turn a page of `(Url, LocalPath)` into file jobs, and a file into ranges.

Pure functions only; the order of work is the order of the listing, so the first page's
files start first and URLs are used in the order they were issued.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Protocol

from .paths import safe_relative_path
from .presign import PresignedUrl


class UrlLease(Protocol):
    """A file's URL, renewed on demand (implemented by `hub.PageUrls`)."""

    async def fresh(self, margin: float) -> PresignedUrl: ...

    async def renew(self, stale: PresignedUrl) -> PresignedUrl: ...


@dataclass(frozen=True, slots=True)
class FileJob:
    local_path: str  # as the service sent it
    relative: PurePosixPath  # safe path below DEST
    url: UrlLease


@dataclass(frozen=True, slots=True)
class Span:
    """Bytes `start..end` of a file, inclusive."""

    start: int
    end: int


def file_job(local_path: str, url: UrlLease) -> FileJob:
    """A job for one listed file; raises `UnsafeLocalPath` for a path it must not write."""
    return FileJob(local_path, safe_relative_path(local_path), url)


def spans(start: int, size: int, chunk_size: int) -> list[Span]:
    """Split bytes `start..size-1` into spans of `chunk_size` (the last one shorter)."""
    return [Span(offset, min(offset + chunk_size, size) - 1) for offset in range(start, size, chunk_size)]
