"""Resume state: a SQLite journal (WAL) and a one-writer lock, in `DEST/.mirror/`.

Schema (version 1):

    files(path PRIMARY KEY,   -- below DEST, POSIX
          size, etag,         -- the source object's identity when it was fetched
          expect,             -- JSON: how its bytes are verified (integrity.Expectation)
          state,              -- 'partial' (a .part is being filled) or 'complete'
          verified,           -- 1 ok, NULL unverified (nothing to check against)
          method, detail,     -- how it was verified / why not
          sha256, mtime_ns,   -- of the final file, for the manifest and change detection
          updated)            -- unix time of the last change
    spans(path, start, end)   -- byte ranges of a partial file already written

A span is recorded only after its bytes were written to the `.part` file, so after a
SIGKILL at any instant every recorded span is really there (the page cache survives the
process); at most the spans in flight are fetched again. A power loss can lose written
bytes under recorded spans; the hash check of every file before its rename catches that.

Every method blocks; the transfer layer calls them from worker threads.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import DestinationBusy, DiskError
from .paths import STATE_DIR

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, etag TEXT, expect TEXT, state TEXT NOT NULL,
    verified INTEGER, method TEXT, detail TEXT, sha256 TEXT, mtime_ns INTEGER, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS spans (
    path TEXT NOT NULL, start INTEGER NOT NULL, end INTEGER NOT NULL, PRIMARY KEY (path, start));
PRAGMA user_version = 1;
"""


@dataclass(frozen=True, slots=True)
class FileRecord:
    path: str
    size: int
    etag: str | None
    expect: str | None
    state: str  # "partial" or "complete"
    verified: bool | None
    method: str | None
    detail: str | None
    sha256: str | None
    mtime_ns: int | None


@dataclass(frozen=True, slots=True)
class Completion:
    """A verified file renamed into place, waiting for the next durable batch."""

    path: str
    size: int
    etag: str | None
    expect: str
    verified: bool | None
    method: str
    detail: str
    sha256: str
    mtime_ns: int


def state_dir(dest: Path) -> Path:
    return dest / STATE_DIR


class Journal:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection
        self._lock = threading.Lock()

    @classmethod
    def open(cls, dest: Path, suffix: str = "", *, read_only: bool = False) -> "Journal":
        """The journal of DEST (one per shard: `suffix`); read-only opens it as it is, or empty."""
        path = state_dir(dest) / f"journal{suffix}.sqlite"
        if read_only:
            uri = f"file:{path}?immutable=1" if path.exists() else "file::memory:"
            connection = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
            if not path.exists():
                connection.executescript(_SCHEMA)
            return cls(connection)
        try:
            path.parent.mkdir(exist_ok=True)
            connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise DiskError(f"{path}: cannot open the journal: {exc}") from exc
        return cls(connection)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def records(self) -> dict[str, FileRecord]:
        with self._lock:
            rows = self._db.execute("SELECT path, size, etag, expect, state, verified, method, detail, sha256, "
                                    "mtime_ns FROM files").fetchall()
        return {row[0]: FileRecord(*row[:5], None if row[5] is None else bool(row[5]), *row[6:]) for row in rows}

    def spans(self, path: str) -> list[tuple[int, int]]:
        with self._lock:
            return self._db.execute("SELECT start, end FROM spans WHERE path = ? ORDER BY start", (path,)).fetchall()

    def start(self, path: str, size: int, etag: str | None, expect: str) -> None:
        """A new `.part` for `path`: forget anything recorded before."""
        self._write(
            ("DELETE FROM spans WHERE path = ?", (path,)),
            ("INSERT OR REPLACE INTO files (path, size, etag, expect, state, updated) "
             "VALUES (?, ?, ?, ?, 'partial', ?)", (path, size, etag, expect, time.time())),
        )

    def add_span(self, path: str, start: int, end: int) -> None:
        self._write(("INSERT OR REPLACE INTO spans (path, start, end) VALUES (?, ?, ?)", (path, start, end)))

    def complete(self, done: list[Completion]) -> None:
        """Mark files complete, in one transaction (after their bytes were made durable)."""
        now = time.time()
        statements: list[tuple[str, tuple]] = []
        for c in done:
            statements.append(("DELETE FROM spans WHERE path = ?", (c.path,)))
            statements.append((
                "INSERT OR REPLACE INTO files (path, size, etag, expect, state, verified, method, detail, sha256, "
                "mtime_ns, updated) VALUES (?, ?, ?, ?, 'complete', ?, ?, ?, ?, ?, ?)",
                (c.path, c.size, c.etag, c.expect, c.verified, c.method, c.detail, c.sha256, c.mtime_ns, now)))
        self._write(*statements)

    def forget(self, path: str) -> None:
        self._write(("DELETE FROM spans WHERE path = ?", (path,)), ("DELETE FROM files WHERE path = ?", (path,)))

    def _write(self, *statements: tuple[str, tuple]) -> None:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for sql, params in statements:
                    self._db.execute(sql, params)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise DiskError(f"journal write failed: {exc}") from exc


class DestinationLock:
    """An exclusive `flock` on `DEST/.mirror/lock`: one writer per destination.

    The kernel drops the lock when its process dies, however it dies, so a lock left by a
    killed run is simply taken by the next one. The holder's PID is written for messages.
    """

    def __init__(self, dest: Path, suffix: str = "") -> None:
        self.path = state_dir(dest) / f"lock{suffix}"
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            raise DiskError(f"{self.path}: cannot create the lock: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DestinationBusy(f"{self.path.parent.parent}: another mirror (pid {holder}) is using this "
                                  "destination; wait for it or stop it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> "DestinationLock":
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
