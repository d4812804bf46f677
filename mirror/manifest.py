"""`DEST/.mirror/manifest.json`: every mirrored file with its size, ETag, SHA-256 and how it
was verified; written atomically at the end of each run, read by `mirror verify`.

Format (version 1):

    {"format": "mirror-manifest/1", "written": "2026-11-22T00:00:00Z",
     "content": {"hub": ..., "type": ..., "name": ..., "version": ... or null},
     "files": {"weights/model.safetensors": {"size": 123, "etag": "...-8", "sha256": "...",
               "verified": true | null, "method": "multipart-md5 (8 MiB parts)", "detail": ""}}}

`verified` is true when the bytes matched the server's ETag or checksum, null when there
was nothing to check against (the reason is in `detail`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .disk import disk_error
from .errors import UsageError
from .journal import FileRecord, state_dir
from .paths import STATE_DIR

FORMAT = "mirror-manifest/1"
_READ_SIZE = 1 << 20


def manifest_path(dest: Path, suffix: str = "") -> Path:
    return state_dir(dest) / f"manifest{suffix}.json"


def manifest_paths(dest: Path) -> list[Path]:
    """Every manifest of DEST: one, or one per shard that wrote into it."""
    return sorted(state_dir(dest).glob("manifest*.json"))


def write_manifest(dest: Path, content: dict[str, Any], records: Iterable[FileRecord], suffix: str = "") -> Path:
    """Write the manifest atomically: a temporary file, fsynced, renamed over the old one."""
    files = {r.path: {"size": r.size, "etag": r.etag, "sha256": r.sha256, "verified": r.verified,
                      "method": r.method, "detail": r.detail or ""} for r in sorted(records, key=lambda r: r.path)}
    document = {"format": FORMAT, "written": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "content": content, "files": files}
    target = manifest_path(dest, suffix)
    temporary = target.with_name(f".manifest.{os.getpid()}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except OSError as exc:
        raise disk_error(exc, target) from exc
    return target


def read_manifests(dest: Path) -> dict[str, Any]:
    """The files of every manifest of DEST (shards' manifests together)."""
    paths = manifest_paths(dest)
    if not paths:
        raise UsageError(f"{manifest_path(dest)}: no manifest; run `mirror sync` into {dest} first")
    files: dict[str, Any] = {}
    for path in paths:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UsageError(f"{path}: unreadable manifest: {exc}") from exc
        if document.get("format") != FORMAT:
            raise UsageError(f"{path}: unknown manifest format {document.get('format')!r}")
        files.update(document["files"])
    return files


def files_on_disk(dest: Path) -> set[str]:
    """Every file and symlink below DEST (POSIX, relative), outside `.mirror/`, unfollowed."""
    found: set[str] = set()
    for directory, subdirs, files in os.walk(dest):
        relative = Path(directory).relative_to(dest)
        if relative == Path("."):
            subdirs[:] = [d for d in subdirs if d != STATE_DIR]
        links = [d for d in subdirs if os.path.islink(os.path.join(directory, d))]
        found.update((relative / name).as_posix() for name in [*files, *links])
    return found


@dataclass(slots=True)
class VerifyReport:
    checked: int = 0
    differs: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.differs or self.missing or self.extra)


def check_file(dest: Path, path: str, entry: dict[str, Any]) -> str | None:
    """None when the file matches its manifest entry, else what is wrong ("missing", ...)."""
    target = dest / path
    try:
        if not target.is_file() or target.is_symlink():
            return "missing"
        size = target.stat().st_size
        if size != entry["size"]:
            return f"size is {size}, expected {entry['size']}"
        digest = hashlib.sha256()
        with open(target, "rb") as handle:
            while block := handle.read(_READ_SIZE):
                digest.update(block)
    except OSError as exc:
        return f"unreadable: {exc.strerror}"
    if digest.hexdigest() != entry["sha256"]:
        return f"sha256 is {digest.hexdigest()}, expected {entry['sha256']}"
    return None
