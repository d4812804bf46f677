import base64
import hashlib
import random
import zlib

import pytest

from mirror import integrity
from mirror.integrity import Expectation, FileHasher, expectation_for, part_size_candidates

MiB = 1024 * 1024


def multipart_etag(data: bytes, part_size: int) -> str:
    digests = [hashlib.md5(data[i:i + part_size]).digest() for i in range(0, len(data), part_size)]
    return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"


def hash_all(expectation: Expectation, data: bytes, block: int = 300_001) -> integrity.Verdict:
    hasher = FileHasher(expectation)
    for offset in range(0, len(data), block):
        hasher.update(data[offset:offset + block])
    return hasher.verdict()


def test_single_part_etag_is_the_md5():
    data = random.Random(1).randbytes(1000)
    verdict = hash_all(expectation_for(len(data), hashlib.md5(data).hexdigest(), {}), data)
    assert (verdict.ok, verdict.method, verdict.sha256) == (True, "md5", hashlib.sha256(data).hexdigest())


def test_a_flipped_byte_fails_the_md5():
    data = bytearray(random.Random(2).randbytes(1000))
    expectation = expectation_for(len(data), hashlib.md5(data).hexdigest(), {})
    data[500] ^= 1
    assert hash_all(expectation, bytes(data)).ok is False


def test_multipart_etag_with_the_common_part_size():
    data = random.Random(3).randbytes(20 * MiB + 5)
    verdict = hash_all(expectation_for(len(data), multipart_etag(data, 8 * MiB), {}), data)
    assert verdict.ok and verdict.method == "multipart-md5 (8 MiB parts)"


def test_part_size_is_inferred_when_no_common_size_fits():
    assert part_size_candidates(3 * MiB + 17, 4) == (1 * MiB,)
    data = random.Random(4).randbytes(3 * MiB + 17)
    assert hash_all(expectation_for(len(data), multipart_etag(data, MiB), {}), data).ok


def test_other_candidate_part_sizes_are_tried_from_disk():
    data = bytes(range(256)) * (40 * MiB // 256)
    expectation = expectation_for(len(data), multipart_etag(data, 15_000_000), {})
    assert expectation.part_sizes[:2] == (16 * MiB, 15_000_000)
    assert hash_all(expectation, data).ok is False  # the first guess, 16 MiB, is wrong
    verdict = integrity.verify_other_part_sizes(lambda offset, count: data[offset:offset + count], len(data),
                                                expectation)
    assert verdict is not None and verdict.ok and "15000000 B parts" in verdict.method


def test_kms_and_odd_etags_are_unverified_with_a_reason():
    kms = expectation_for(10, "0" * 32, {"x-amz-server-side-encryption": "aws:kms"})
    assert not kms.verifiable and "SSE-KMS" in kms.reason
    assert "neither" in expectation_for(10, "opaque", {}).reason
    verdict = hash_all(kms, b"0123456789")
    assert verdict.ok is None and verdict.sha256 == hashlib.sha256(b"0123456789").hexdigest()


@pytest.mark.parametrize("name, digest", [
    ("sha256", lambda d: hashlib.sha256(d).digest()),
    ("sha1", lambda d: hashlib.sha1(d).digest()),
    ("crc32", lambda d: zlib.crc32(d).to_bytes(4, "big")),
])
def test_full_object_checksum_headers_win_over_the_etag(name, digest):
    data = random.Random(5).randbytes(12345)
    header = base64.b64encode(digest(data)).decode()
    expectation = expectation_for(len(data), "opaque-etag", {f"x-amz-checksum-{name}": header})
    assert expectation.method == name
    assert hash_all(expectation, data).ok
    assert hash_all(expectation, data[:-1] + b"x").ok is False


def test_crc32c_and_crc64nvme_use_awscrt():
    from awscrt import checksums

    data = random.Random(6).randbytes(5000)
    for name, value, width in (("crc32c", checksums.crc32c(data), 4), ("crc64nvme", checksums.crc64nvme(data), 8)):
        header = base64.b64encode(value.to_bytes(width, "big")).decode()
        assert hash_all(expectation_for(len(data), None, {f"x-amz-checksum-{name}": header}), data).ok


def test_composite_checksum_of_parts():
    data = random.Random(7).randbytes(10 * MiB)
    parts = [hashlib.sha256(data[i:i + 8 * MiB]).digest() for i in range(0, len(data), 8 * MiB)]
    header = base64.b64encode(hashlib.sha256(b"".join(parts)).digest()).decode() + "-2"
    expectation = expectation_for(len(data), None, {"x-amz-checksum-sha256": header})
    assert expectation.method == "composite-sha256"
    assert hash_all(expectation, data).ok


def test_expectation_survives_the_journal():
    expectation = expectation_for(40 * MiB, "0" * 32 + "-3", {})
    assert Expectation.from_json(expectation.to_json()) == expectation
