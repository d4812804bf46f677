"""Turn an untrusted `LocalPath` from the service into a safe path relative to DEST.

A LocalPath is the service's suggestion (pattern `/.*`, up to 1024 characters). It is
treated as hostile: the result is always a relative POSIX path of plain names, so joining
it to DEST can never leave DEST. Symlinks already inside DEST are the disk layer's concern.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import PurePosixPath

from .errors import UnsafeLocalPath

STATE_DIR = ".mirror"  # reserved: the journal, lock and manifest live here
PART_SUFFIX = ".part"
MAX_LOCAL_PATH = 1024
MAX_NAME_BYTES = 255  # NAME_MAX on Linux, macOS and Windows filesystems
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")


def safe_relative_path(local_path: str) -> PurePosixPath:
    """Map `/a/b.bin` to `a/b.bin`, or raise `UnsafeLocalPath` saying why not."""
    _check_whole(local_path)
    names = local_path[1:].split("/")
    for name in names:
        _check_name(local_path, name)
    if names[0] == STATE_DIR:
        raise _unsafe(local_path, f"'{STATE_DIR}' is reserved for the mirror's own state")
    return PurePosixPath(*names)


def _check_whole(local_path: str) -> None:
    if not local_path.startswith("/"):
        raise _unsafe(local_path, "does not begin with '/'")
    if len(local_path) > MAX_LOCAL_PATH:
        raise _unsafe(local_path, f"longer than {MAX_LOCAL_PATH} characters")
    if local_path == "/":
        raise _unsafe(local_path, "names no file")


def _check_name(local_path: str, name: str) -> None:
    if name in ("", ".", ".."):
        raise _unsafe(local_path, "has an empty, '.' or '..' component")
    if "\\" in name:
        raise _unsafe(local_path, "contains a backslash")
    if _WINDOWS_DRIVE.match(name):
        raise _unsafe(local_path, "looks like a Windows drive path")
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        raise _unsafe(local_path, "contains a NUL or control character")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise _unsafe(local_path, f"has a name longer than {MAX_NAME_BYTES} bytes")


def _unsafe(local_path: str, why: str) -> UnsafeLocalPath:
    shown = local_path if len(local_path) <= 80 else local_path[:77] + "..."
    return UnsafeLocalPath(f"refused LocalPath {shown!r}: {why}")
