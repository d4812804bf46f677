"""What the bytes of a file must hash to, and hashing them.

The check is chosen per object from what the server said about it, strongest first:

0. a zero-byte object: its size, from `Content-Range: bytes */0`, is all there is;
1. an `x-amz-checksum-{sha256,sha1,crc32,crc32c,crc64nvme}` header: full-object, or
   composite `-N` (the checksum of the part checksums);
2. a single-part ETag (32 hex digits, no SSE-KMS / SSE-C): the MD5 of the bytes;
3. a multipart ETag `md5(concat(md5(part_i)))-N`: the part size is inferred (every common
   size P with ceil(size/P) == N, then size/N rounded up to a MiB), the first candidate is
   hashed while downloading, the others from disk only if it does not match;
4. otherwise "unverified", with the reason, never "ok".

Hashing is sequential and reads the `.part` file from the page cache as its written prefix
grows, so chunks may arrive in any order, a resumed file needs no saved hash state, and a
byte flipped on the wire or lost to a crash is caught. SHA-256 is always computed too: it
goes into the manifest that `mirror verify` checks later.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import zlib
from dataclasses import dataclass
from typing import Callable, Mapping, Protocol

MiB = 1024 * 1024
COMMON_PART_SIZES = (8 * MiB, 16 * MiB, 5 * MiB, 50 * MiB, 15_000_000, 64 * MiB, 100 * MiB)
CHECKSUM_ALGORITHMS = ("sha256", "sha1", "crc32c", "crc32", "crc64nvme")  # preference order
READ_SIZE = 1 << 20
_MD5_HEX = re.compile(r"[0-9a-f]{32}")
_MULTIPART = re.compile(r"([0-9a-f]{32})-(\d+)")
_COMPOSITE = re.compile(r"(.+)-(\d+)")


class HashLike(Protocol):
    def update(self, data: bytes, /) -> None: ...

    def digest(self) -> bytes: ...


class _Crc:
    """A CRC behind the hashlib interface; the digest is big-endian, as S3 encodes it."""

    def __init__(self, function: Callable[[bytes, int], int], width: int) -> None:
        self._function, self._width, self._value = function, width, 0

    def update(self, data: bytes) -> None:
        self._value = self._function(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(self._width, "big")


def algorithm(name: str) -> Callable[[], HashLike]:
    """A factory of hash objects for `name`; raises LookupError where it is unavailable."""
    if name in ("md5", "sha1", "sha256"):
        return getattr(hashlib, name)
    if name == "crc32":
        return lambda: _Crc(zlib.crc32, 4)
    try:
        from awscrt import checksums
    except ImportError:
        raise LookupError(f"{name} needs the awscrt package") from None
    if name == "crc32c":
        return lambda: _Crc(checksums.crc32c, 4)
    if name == "crc64nvme":
        return lambda: _Crc(checksums.crc64nvme, 8)
    raise LookupError(f"unknown checksum algorithm {name}")


@dataclass(frozen=True, slots=True)
class Expectation:
    """What a file's bytes must hash to, and how to tell."""

    method: str  # "md5", "multipart-md5", "sha256", "crc32c", ... or "none"
    expected: str | None = None  # hex MD5, full multipart ETag, or base64 checksum (with -N)
    parts: int | None = None  # N of a multipart ETag or composite checksum
    part_sizes: tuple[int, ...] = ()  # candidate part sizes, most likely first
    reason: str | None = None  # why nothing can be verified

    @property
    def verifiable(self) -> bool:
        return self.method != "none"

    def to_json(self) -> str:
        # by hand: dataclasses.asdict deep-copies, once per file
        return json.dumps({"method": self.method, "expected": self.expected, "parts": self.parts,
                           "part_sizes": list(self.part_sizes), "reason": self.reason})

    @classmethod
    def from_json(cls, text: str) -> "Expectation":
        data = json.loads(text)
        return cls(**{**data, "part_sizes": tuple(data.get("part_sizes", ()))})


def expectation_for(size: int, etag: str | None, headers: Mapping[str, str]) -> Expectation:
    """Pick the strongest check the server's answer allows (headers are case-insensitive)."""
    if size == 0:  # the server's Content-Range (bytes */0) already says every byte there is
        return Expectation("empty")
    for name in CHECKSUM_ALGORITHMS:
        value = headers.get(f"x-amz-checksum-{name}")
        if value:
            return _checksum_expectation(name, value, size)
    if not etag:
        return Expectation("none", reason="the server sent no ETag or checksum")
    if headers.get("x-amz-server-side-encryption") == "aws:kms" or \
            headers.get("x-amz-server-side-encryption-customer-algorithm"):
        return Expectation("none", reason="the object is encrypted with SSE-KMS or SSE-C: its ETag is not an MD5")
    if _MD5_HEX.fullmatch(etag):
        return Expectation("md5", etag)
    match = _MULTIPART.fullmatch(etag)
    if match:
        parts = int(match.group(2))
        candidates = part_size_candidates(size, parts)
        if candidates:
            return Expectation("multipart-md5", etag, parts, candidates)
        return Expectation("none", reason=f"no part size splits {size} bytes into {parts} parts")
    return Expectation("none", reason=f"ETag {etag!r} is neither an MD5 nor a multipart ETag")


def _checksum_expectation(name: str, value: str, size: int) -> Expectation:
    try:
        algorithm(name)
    except LookupError as exc:
        return Expectation("none", reason=str(exc))
    match = _COMPOSITE.fullmatch(value)
    if match:
        parts = int(match.group(2))
        candidates = part_size_candidates(size, parts)
        if not candidates:
            return Expectation("none", reason=f"no part size splits {size} bytes into {parts} parts")
        return Expectation(f"composite-{name}", value, parts, candidates)
    return Expectation(name, value)


def part_size_candidates(size: int, parts: int) -> tuple[int, ...]:
    """Part sizes P with ceil(size / P) == parts: the common ones, then size/parts in MiB."""
    if parts < 1 or size < parts:
        return ()
    fits = [p for p in COMMON_PART_SIZES if math.ceil(size / p) == parts]
    inferred = math.ceil(size / parts / MiB) * MiB
    if math.ceil(size / inferred) == parts and inferred not in fits:
        fits.append(inferred)
    return tuple(fits)


class _PartDigests:
    """Hash parts of a fixed size and combine their digests the way S3 does."""

    def __init__(self, name: str, part_size: int) -> None:
        self._new = algorithm(name)
        self._part_size = part_size
        self._current = self._new()
        self._filled = 0
        self._digests: list[bytes] = []

    def update(self, block: bytes) -> None:
        view = memoryview(block)
        while view:
            take = min(len(view), self._part_size - self._filled)
            self._current.update(view[:take])
            self._filled += take
            view = view[take:]
            if self._filled == self._part_size:
                self._close_part()

    def _close_part(self) -> None:
        self._digests.append(self._current.digest())
        self._current, self._filled = self._new(), 0

    def combined(self) -> tuple[bytes, int]:
        if self._filled:
            self._close_part()
        combined = self._new()
        combined.update(b"".join(self._digests))
        return combined.digest(), len(self._digests)


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool | None  # None: nothing to verify against
    method: str  # how it was verified, e.g. "multipart-md5 (8 MiB parts)"
    sha256: str
    detail: str = ""  # why unverified, or what differed


class FileHasher:
    """Hashes one file front to back; fed with consecutive blocks (blocking calls)."""

    def __init__(self, expectation: Expectation) -> None:
        self.expectation = expectation
        self.position = 0
        self._sha256 = hashlib.sha256()
        # a sha256 check shares the manifest's hash instead of computing it twice
        self._check = self._sha256 if expectation.method == "sha256" else \
            _checker(expectation, expectation.part_sizes[0] if expectation.part_sizes else None)

    def update(self, block: bytes) -> None:
        self._sha256.update(block)
        if self._check is not None and self._check is not self._sha256:
            self._check.update(block)
        self.position += len(block)

    def verdict(self) -> Verdict:
        sha256 = self._sha256.hexdigest()
        expectation = self.expectation
        if not expectation.verifiable:
            return Verdict(None, "unverified", sha256, expectation.reason or "")
        if expectation.method == "empty":
            return Verdict(self.position == 0, "empty object", sha256)
        part_size = expectation.part_sizes[0] if expectation.part_sizes else None
        actual = _encode(expectation, self._check, self._sha256)
        return _compare(expectation, actual, sha256, part_size)


def _checker(expectation: Expectation, part_size: int | None) -> object | None:
    method = expectation.method
    if method in ("none", "empty"):
        return None
    if method == "md5":
        return hashlib.md5()
    if method == "multipart-md5":
        return _PartDigests("md5", part_size or 0)
    if method.startswith("composite-"):
        return _PartDigests(method.removeprefix("composite-"), part_size or 0)
    return algorithm(method)()


def _encode(expectation: Expectation, check: object, sha256: HashLike) -> str:
    method = expectation.method
    if method == "md5":
        return check.hexdigest()  # type: ignore[attr-defined]
    if isinstance(check, _PartDigests):
        digest, count = check.combined()
        text = digest.hex() if method == "multipart-md5" else base64.b64encode(digest).decode()
        return f"{text}-{count}"
    return base64.b64encode(check.digest()).decode()  # type: ignore[attr-defined]


def _compare(expectation: Expectation, actual: str, sha256: str, part_size: int | None) -> Verdict:
    method = expectation.method
    if part_size is not None:
        method = f"{method} ({_size_name(part_size)} parts)"
    if actual == expectation.expected:
        return Verdict(True, method, sha256)
    return Verdict(False, method, sha256, f"{expectation.method} is {actual}, expected {expectation.expected}")


def _size_name(size: int) -> str:
    return f"{size // MiB} MiB" if size % MiB == 0 else f"{size} B"


def verify_other_part_sizes(read: Callable[[int, int], bytes], size: int, expectation: Expectation) -> Verdict | None:
    """Re-hash from disk with every other candidate part size; the matching verdict or None."""
    for part_size in expectation.part_sizes[1:]:
        hasher = FileHasher(Expectation(expectation.method, expectation.expected, expectation.parts, (part_size,)))
        for offset in range(0, size, READ_SIZE):
            hasher.update(read(offset, min(READ_SIZE, size - offset)))
        verdict = hasher.verdict()
        if verdict.ok:
            return verdict
    return None
