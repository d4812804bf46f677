"""The destination on disk: `NAME.part` files written at offsets, then renamed into place.

Every function here blocks; the transfer layer calls them from worker threads. A file
appears under its final name only after its bytes are complete and verified, and parent
directories are created one level at a time, refusing any symlink on the way, so nothing
is ever written outside DEST even if DEST holds a planted link.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from pathlib import Path, PurePosixPath

from .config import format_size
from .errors import DiskError, UnsafeLocalPath
from .paths import PART_SUFFIX, STATE_DIR

_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def prepare_destination(dest: Path) -> Path:
    """Create DEST if needed and return its resolved path."""
    try:
        dest.mkdir(parents=True, exist_ok=True)
        resolved = dest.resolve(strict=True)
    except OSError as exc:
        raise disk_error(exc, dest) from exc
    if not os.access(resolved, os.W_OK | os.X_OK):
        raise DiskError(f"{dest}: destination is not writable")
    return resolved


class PartFile:
    """One file being downloaded: `dir/NAME.part`, pre-sized, written with pwrite."""

    def __init__(self, dest: Path, relative: PurePosixPath) -> None:
        self.relative = relative
        self.final = dest.joinpath(*relative.parts)
        self.part = self.final.with_name(self.final.name + PART_SUFFIX)
        self._dest = dest
        self._fd: int | None = None

    def open(self, size: int, *, resume: bool = False, reserve: bool = True) -> None:
        """Open the `.part` file: an existing one to resume, or a new one of `size` bytes."""
        try:
            _make_parents(self._dest, self.relative)
            fd = os.open(self.part, _OPEN_FLAGS | (0 if resume else os.O_TRUNC), 0o644)
        except OSError as exc:
            raise disk_error(exc, self.part) from exc
        self._fd = fd
        try:
            if reserve:
                os.ftruncate(fd, size)
                _reserve(fd, size)
        except OSError as exc:
            self.close()
            if exc.errno == errno.ENOSPC:
                raise _no_space(self.part, size) from exc
            raise disk_error(exc, self.part) from exc

    def write_at(self, blocks: list[bytes], offset: int) -> None:
        """Write `blocks` back to back starting at `offset` (positional, no seek)."""
        assert self._fd is not None, "open() first"
        total = sum(len(b) for b in blocks)
        try:
            written = os.pwritev(self._fd, blocks, offset)
            if written < total:  # short write: finish the rest one block at a time
                self._write_rest(b"".join(blocks)[written:], offset + written)
        except OSError as exc:
            raise disk_error(exc, self.part) from exc
        _start_writeback(self._fd, offset, total)

    def read_at(self, offset: int, count: int) -> bytes:
        assert self._fd is not None, "open() first"
        try:
            return os.pread(self._fd, count, offset)
        except OSError as exc:
            raise disk_error(exc, self.part) from exc

    def _write_rest(self, data: bytes, offset: int) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(self._fd, view, offset)
            view, offset = view[n:], offset + n

    def commit(self) -> int:
        """Close and rename `NAME.part` to `NAME`; its mtime_ns. Durable after `sync_filesystem`.

        The rename happens only once every byte is written and verified, so a killed process
        never leaves a partial file under its final name. Durability against power loss is
        batched: the journal marks files complete only after `sync_filesystem`, and a renamed
        file the journal does not yet call complete is re-verified before it is trusted.
        """
        assert self._fd is not None, "open() first"
        try:
            self.close()
            os.replace(self.part, self.final)
            return os.stat(self.final, follow_symlinks=False).st_mtime_ns
        except OSError as exc:
            raise disk_error(exc, self.final) from exc

    def adopt(self) -> None:
        """Move a final file back to `NAME.part`, to be checked before it is trusted."""
        try:
            os.replace(self.final, self.part)
        except OSError as exc:
            raise disk_error(exc, self.final) from exc

    def discard(self) -> None:
        """Close and delete the `.part` file: its bytes are wrong or unwanted."""
        self.close()
        try:
            os.unlink(self.part)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise disk_error(exc, self.part) from exc

    def stats(self) -> tuple[os.stat_result | None, os.stat_result | None]:
        """`lstat` of the final file and of the `.part` file (None where absent)."""
        return _lstat(self.final), _lstat(self.part)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _lstat(path: Path) -> os.stat_result | None:
    try:
        result = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise disk_error(exc, path) from exc
    return result if stat.S_ISREG(result.st_mode) else None


def _make_parents(dest: Path, relative: PurePosixPath) -> None:
    current = dest
    for name in relative.parts[:-1]:
        current = current / name
        try:
            os.mkdir(current, 0o755)
        except FileExistsError:
            pass
        if current.is_symlink() or not current.is_dir():
            raise UnsafeLocalPath(f"refused {relative}: {current} is a symlink or not a directory")
    if (dest / relative).is_symlink():
        raise UnsafeLocalPath(f"refused {relative}: the destination is a symlink")


def _reserve(fd: int, size: int) -> None:
    """Allocate the blocks now, so a full disk fails at the start, not mid-file."""
    if size and hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise


def prewarm(dest: Path, paths: list[str]) -> int:
    """Read these files once so their pages are in the page cache; the bytes read.

    A real read, not POSIX_FADV_WILLNEED: on the machines measured (benchmarks/prewarm.py)
    the advice left a 2 GiB file slower to read than before, while one read made the next
    reader 4x faster.
    """
    total = 0
    buffer = bytearray(8 * 1024 * 1024)
    for path in paths:
        try:
            fd = os.open(dest / path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue  # gone or replaced meanwhile: nothing to warm
        try:
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            while count := os.readv(fd, [buffer]):
                total += count
        finally:
            os.close(fd)
    return total


def sync_filesystem(dest: Path) -> None:
    """Flush every written byte and rename on DEST's filesystem to stable storage.

    One `syncfs(2)` covers a whole batch of files (and their directories); where it is
    missing, `sync(2)` does the same for every filesystem.
    """
    fd = os.open(dest, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        if _LIBC is None or _LIBC.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def _start_writeback(fd: int, offset: int, count: int) -> None:
    """Ask the kernel to start writing these bytes to disk now, without waiting.

    The disk then works while the download goes on, instead of all at once when the batch
    is made durable; `sync_file_range(SYNC_FILE_RANGE_WRITE)` does not block on the I/O.
    """
    if _LIBC is not None and hasattr(_LIBC, "sync_file_range"):
        _LIBC.sync_file_range(fd, ctypes.c_int64(offset), ctypes.c_int64(count), _SYNC_FILE_RANGE_WRITE)


def _load_libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc if hasattr(libc, "syncfs") else None
    except OSError:
        return None


_LIBC = _load_libc()
_SYNC_FILE_RANGE_WRITE = 2


def is_case_insensitive(dest: Path) -> bool:
    """Whether DEST's filesystem folds case (macOS, Windows shares, casefold ext4)."""
    probe = dest / STATE_DIR / f"case-probe-{os.getpid()}"
    try:
        probe.touch()
        return (probe.parent / probe.name.upper()).exists()
    except OSError:
        return False
    finally:
        try:
            probe.unlink(missing_ok=True)
        except OSError:
            pass


def _no_space(path: Path, size: int) -> DiskError:
    free = _free_bytes(path.parent)
    return DiskError(f"{path}: no space left on device: it needs {format_size(size)}, "
                     f"{format_size(free)} free", fatal=True)


def _free_bytes(directory: Path) -> int:
    try:
        stats = os.statvfs(directory)
    except OSError:
        return 0
    return stats.f_bavail * stats.f_frsize


def disk_error(exc: OSError, path: Path) -> DiskError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskError(f"{path}: no space left on device ({format_size(_free_bytes(path.parent))} free)",
                         fatal=True)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return DiskError(f"{path}: permission denied")
    if exc.errno == errno.EROFS:
        return DiskError(f"{path}: read-only file system", fatal=True)
    if exc.errno == errno.ELOOP:
        return DiskError(f"{path}: refusing to follow a symlink")
    return DiskError(f"{path}: {exc.strerror or exc}")
