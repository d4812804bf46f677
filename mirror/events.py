"""The one stream of events the core emits; renderers (rich, JSON) subscribe to it.

Nothing here knows how events are shown. The core calls `observer(event)` synchronously
from the event loop, so an observer must be quick and must not block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union


@dataclass(frozen=True, slots=True)
class FileStarted:
    path: str  # relative to DEST
    size: int
    resumed_bytes: int = 0  # already on disk from an earlier run


@dataclass(frozen=True, slots=True)
class BytesWritten:
    path: str
    count: int


@dataclass(frozen=True, slots=True)
class FileFinished:
    path: str
    size: int
    verification: str  # how it was verified, or "unverified: why"


@dataclass(frozen=True, slots=True)
class FileSkipped:
    """Verified by an earlier run and unchanged on the server: nothing downloaded."""

    path: str
    size: int


@dataclass(frozen=True, slots=True)
class FileRestarted:
    """Starting the file again from zero (changed on the server, or a checksum mismatch)."""

    path: str
    reason: str


@dataclass(frozen=True, slots=True)
class FilePlanned:
    """--dry-run: what would happen to this file."""

    path: str
    action: str  # "fetch", "resume", "skip", "refetch", "delete"
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ExtraFile:
    """A file under DEST the content no longer has; deleted only with --delete."""

    path: str
    deleted: bool


@dataclass(frozen=True, slots=True)
class FileFailed:
    path: str
    reason: str


@dataclass(frozen=True, slots=True)
class Retrying:
    path: str
    reason: str
    attempt: int
    delay: float


@dataclass(frozen=True, slots=True)
class UrlsRefreshed:
    page: int
    count: int
    reason: str  # "ahead of expiry" or "expired"


@dataclass(frozen=True, slots=True)
class PageListed:
    page: int
    files: int


Event = Union[FileStarted, BytesWritten, FileFinished, FileSkipped, FileRestarted, FileFailed, Retrying,
              UrlsRefreshed, PageListed, ExtraFile, FilePlanned]
Observer = Callable[[Event], None]


def ignore(event: Event) -> None:
    """The observer used when nobody is watching."""
