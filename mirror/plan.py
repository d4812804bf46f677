"""What to fetch: file jobs from listed entries, what to do with each, and byte spans.

Pure functions only; the order of work is the order of the listing, so the first page's
files start first and URLs are used in the order they were issued.
"""

from __future__ import annotations

import enum
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Protocol

from .paths import PART_SUFFIX, safe_relative_path

if TYPE_CHECKING:
    from .journal import FileRecord
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


class ListedPaths:
    """The paths accepted so far, and why a new one would collide with them.

    Refused: the same path twice; a path whose folder is a listed file (`a/b` then
    `a/b/c`) or that is the folder of a listed file; a path that is another's partial
    file (`x` and `x.part`); and on a case-insensitive destination, paths that differ only
    in case. The first one listed is kept.
    """

    def __init__(self, *, case_insensitive: bool = False) -> None:
        self.case_insensitive = case_insensitive
        self.paths: set[str] = set()  # exactly as accepted
        self._files: set[str] = set()  # folded when the destination folds case
        self._folders: set[str] = set()

    def conflict(self, relative: PurePosixPath) -> str | None:
        key = self._key(relative.as_posix())
        if key in self._files:
            return "listed twice" + (" (names differ only in case)" if relative.as_posix() not in self.paths else "")
        if key in self._folders:
            return "is the folder of another listed file"
        folder = next((p for p in relative.parents if self._key(p.as_posix()) in self._files), None)
        if folder is not None:
            return f"its folder {folder} is a listed file"
        if key.endswith(PART_SUFFIX) and key[: -len(PART_SUFFIX)] in self._files:
            return "is the partial-download name of another listed file"
        if key + PART_SUFFIX in self._files:
            return "its partial-download name is another listed file"
        return None

    def add(self, relative: PurePosixPath) -> None:
        self.paths.add(relative.as_posix())
        self._files.add(self._key(relative.as_posix()))
        self._folders.update(self._key(p.as_posix()) for p in relative.parents if p.parts)

    def _key(self, path: str) -> str:
        return path.casefold() if self.case_insensitive else path


class Coverage:
    """Which bytes of a file are on disk: merged, sorted, inclusive intervals."""

    def __init__(self, spans: list[tuple[int, int]] | None = None) -> None:
        self._intervals: list[list[int]] = []
        for start, end in spans or []:
            self.add(start, end)

    def add(self, start: int, end: int) -> None:
        if end < start:
            return
        merged = [start, end]
        kept = []
        for interval in self._intervals:
            if interval[1] + 1 < merged[0] or merged[1] + 1 < interval[0]:
                kept.append(interval)
            else:
                merged = [min(merged[0], interval[0]), max(merged[1], interval[1])]
        kept.append(merged)
        self._intervals = sorted(kept)

    def prefix(self) -> int:
        """How many bytes from offset 0 are contiguous on disk."""
        if self._intervals and self._intervals[0][0] == 0:
            return self._intervals[0][1] + 1
        return 0

    def missing(self, size: int, chunk_size: int) -> list[Span]:
        """The gaps in `0..size-1`, cut into spans of at most `chunk_size`."""
        gaps, position = [], 0
        for start, end in self._intervals:
            gaps += spans(position, min(start, size), chunk_size)
            position = max(position, end + 1)
        return gaps + spans(position, size, chunk_size)

    def complete(self, size: int) -> bool:
        return self.prefix() >= size


class Action(enum.Enum):
    FETCH = "fetch"  # nothing usable on disk: download from zero
    RESUME = "resume"  # a `.part` and its recorded spans: fetch the gaps
    ADOPT = "adopt"  # renamed into place but not yet journalled (killed in between): re-check it
    PROBE = "probe"  # complete and untouched locally: ask the server whether it changed


def decide(record: FileRecord | None, final_stat: os.stat_result | None, part_stat: os.stat_result | None) -> Action:
    """What to do with one listed file, from the journal and what is on disk."""
    if record is None:
        return Action.FETCH
    if record.state == "complete":
        untouched = final_stat is not None and final_stat.st_size == record.size \
            and final_stat.st_mtime_ns == record.mtime_ns
        return Action.PROBE if untouched else Action.FETCH
    if part_stat is not None and part_stat.st_size == record.size:
        return Action.RESUME
    if part_stat is None and final_stat is not None and final_stat.st_size == record.size:
        return Action.ADOPT
    return Action.FETCH


# --- filters and shards ------------------------------------------------------------------------


class PathFilter:
    """`--include` / `--exclude` globs with gitignore-like meaning.

    - A pattern without `/` matches a name at any depth (`*.safetensors`, `config.json`).
    - A pattern with `/` is anchored at the top of the content (`/onnx/*`, `tokenizer/*.json`);
      a leading `/` is optional.
    - `*` and `?` stay inside one path component; `**` spans components (`**/*.json`).
    - A trailing `/` names a folder and everything below it (`onnx/`).
    - A file is kept if it matches any include (or no include is given) and no exclude.
    """

    def __init__(self, include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()) -> None:
        self._include = [_glob(p) for p in include]
        self._exclude = [_glob(p) for p in exclude]

    def keeps(self, relative: str) -> bool:
        if self._include and not any(p.match(relative) for p in self._include):
            return False
        return not any(p.match(relative) for p in self._exclude)


def _glob(pattern: str) -> re.Pattern[str]:
    folder = pattern.endswith("/")
    body = pattern.strip("/")
    anchored = "/" in pattern.rstrip("/")
    regex = ""
    index = 0
    while index < len(body):
        if body.startswith("**/", index):
            regex, index = regex + "(?:.*/)?", index + 3
        elif body.startswith("**", index):
            regex, index = regex + ".*", index + 2
        else:
            regex += {"*": "[^/]*", "?": "[^/]"}.get(body[index], re.escape(body[index]))
            index += 1
    prefix = "" if anchored else "(?:.*/)?"
    suffix = "/.*" if folder else "(?:/.*)?"
    return re.compile(f"{prefix}{regex}{suffix}", re.DOTALL) if regex else re.compile(".*")


def in_shard(relative: str, shard: tuple[int, int] | None) -> bool:
    """Whether shard K of N (K from 0) owns this path: a stable hash, the same on every host."""
    if shard is None:
        return True
    index, count = shard
    digest = hashlib.sha256(relative.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % count == index


def state_suffix(shard: tuple[int, int] | None) -> str:
    """Shards filling one DEST keep their own lock, journal and manifest: `.shard-K-of-N`."""
    return "" if shard is None else f".shard-{shard[0]}-of-{shard[1]}"
