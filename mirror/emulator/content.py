"""What the emulator serves: `ROOT/<content-name>/<version>/<files...>`.

LocalPath is `/` + the file's path below the version folder. An optional
`ROOT/<content-name>/content.json` describes the content:
`{"type": "Model", "gated": true, "kms": true, "single_part": ["/big.bin"]}` (kms: served
as SSE-KMS, opaque ETags; single_part: plain MD5 ETags whatever the size).
ETags follow S3's rules: MD5 of the bytes for single-part objects, and for objects above
the part size `md5(concat(md5(part_i)))-N`, as a multipart upload with that part size makes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..config import version_key

_VERSION_DIR = re.compile(r"\d{1,4}\.\d{1,4}\.\d{1,4}")
_HASH_BLOCK = 1 << 20


@dataclass(frozen=True, slots=True)
class HubObject:
    local_path: str  # "/a/b.bin"
    file: Path
    kms: bool = False  # served as SSE-KMS: an ETag that is not an MD5
    single_part: bool = False  # uploaded in one part whatever its size: a plain MD5 ETag

    @property
    def size(self) -> int:  # read each time: tests change files while the emulator runs
        return self.file.stat().st_size


@dataclass(slots=True)
class HubContent:
    name: str
    content_type: str
    gated: bool
    kms: bool = False
    versions: dict[str, list[HubObject]] = field(default_factory=dict)

    @property
    def latest(self) -> str:
        return max(self.versions, key=version_key)


class Catalog:
    """All content under a root folder, read once at start; ETags computed on first use."""

    def __init__(self, root: Path, *, part_size: int | None) -> None:
        self.root = root
        self.part_size = part_size
        self.contents = {c.name: c for c in _scan(root)}
        self._index = {(c.name, version, o.local_path): o
                       for c in self.contents.values() for version, objects in c.versions.items() for o in objects}
        self._etags: dict[tuple[Path, int, int], str] = {}
        self._etag_lock = threading.Lock()

    def find(self, name: str, version: str, local_path: str) -> HubObject | None:
        return self._index.get((name, version, local_path))

    def cached_etag(self, obj: HubObject) -> str | None:
        """The ETag if this version of the file was hashed already (no hashing here)."""
        stat = obj.file.stat()
        with self._etag_lock:
            return self._etags.get((obj.file, stat.st_size, stat.st_mtime_ns))

    def etag(self, obj: HubObject) -> str:
        """S3's ETag for the object (no quotes); hashed once per version of the file."""
        stat = obj.file.stat()
        key = (obj.file, stat.st_size, stat.st_mtime_ns)
        with self._etag_lock:
            cached = self._etags.get(key)
        if cached is None:
            cached = s3_etag(obj.file, None if obj.single_part else self.part_size)
            if obj.kms:  # SSE-KMS ETags are opaque: anything but the MD5 of the bytes
                cached = hashlib.md5(f"kms:{cached}".encode()).hexdigest()
            with self._etag_lock:
                self._etags[key] = cached
        return cached

    def checksum(self, obj: HubObject, name: str) -> str:
        """The full-object `x-amz-checksum-<name>` value (base64) of the object."""
        from ..integrity import algorithm

        digest = algorithm(name)()
        with obj.file.open("rb") as handle:
            while block := handle.read(_HASH_BLOCK):
                digest.update(block)
        return base64.b64encode(digest.digest()).decode()


def s3_etag(path: Path, part_size: int | None) -> str:
    size = path.stat().st_size
    if part_size is None or size <= part_size:
        return _md5_file(path).hexdigest()
    digests = []
    with path.open("rb") as handle:
        while part := _md5_stream(handle, part_size):
            digests.append(part)
    return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"


def _md5_file(path: Path) -> "hashlib._Hash":
    digest = hashlib.md5()
    with path.open("rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
    return digest


def _md5_stream(handle, limit: int) -> bytes:
    """MD5 of the next `limit` bytes of `handle`, or b'' at end of file."""
    digest = hashlib.md5()
    remaining = limit
    seen = False
    while remaining and (block := handle.read(min(_HASH_BLOCK, remaining))):
        digest.update(block)
        remaining -= len(block)
        seen = True
    return digest.digest() if seen else b""


def _scan(root: Path) -> list[HubContent]:
    if not root.is_dir():
        raise FileNotFoundError(f"emulator root {root} is not a directory")
    contents = []
    for content_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        meta = _read_meta(content_dir / "content.json")
        content = HubContent(content_dir.name, meta.get("type", "Model"), bool(meta.get("gated", False)),
                             bool(meta.get("kms", False)))
        single_part = set(meta.get("single_part", []))
        for version_dir in sorted(p for p in content_dir.iterdir() if p.is_dir()):
            if _VERSION_DIR.fullmatch(version_dir.name):
                content.versions[version_dir.name] = _objects(version_dir, content.kms, single_part)
        if content.versions:
            contents.append(content)
    return contents


def _read_meta(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _objects(version_dir: Path, kms: bool, single_part: set[str]) -> list[HubObject]:
    files = sorted(p for p in version_dir.rglob("*") if p.is_file())
    paths = ["/" + p.relative_to(version_dir).as_posix() for p in files]
    return [HubObject(path, p, kms, path in single_part) for path, p in zip(paths, files)]


# --- synthetic content ------------------------------------------------------------------


def write_synthetic(root: Path, name: str, version: str, files: dict[str, int], *, seed: int = 0,
                    gated: bool = False, kms: bool = False, single_part: tuple[str, ...] = ()) -> Path:
    """Write seeded pseudo-random files `{relative path: size}` as one content version."""
    version_dir = root / name / version
    rng = random.Random(seed)
    for relative, size in files.items():
        target = version_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as handle:
            remaining = size
            while remaining:
                block = min(remaining, 4 << 20)
                handle.write(rng.randbytes(block))
                remaining -= block
    if gated or kms or single_part:
        meta = {"type": "Model", "gated": gated, "kms": kms, "single_part": list(single_part)}
        (root / name / "content.json").write_text(json.dumps(meta))
    return version_dir
