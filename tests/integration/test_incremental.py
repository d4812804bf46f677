"""Integrity, incremental sync, --delete, the manifest, verify and the lock, in-process."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import anyio
import pytest

from mirror import DestinationBusy, events, sync, verify
from mirror.emulator import write_synthetic
from mirror.journal import DestinationLock
from tests.conftest import SMALL_MODEL, settings_for, stats, tree
from tests.integration.test_sync import Recorder, expected_tree

pytestmark = pytest.mark.anyio


@pytest.fixture
def own_root(tmp_path: Path) -> Path:
    """A content root this test may change while the emulator serves it."""
    root = tmp_path / "content"
    write_synthetic(root, "small-model", "1.0.0", SMALL_MODEL, seed=1)
    return root


async def test_every_file_is_verified_and_listed_in_the_manifest(emulator_factory, content_root, tmp_path):
    async with emulator_factory() as emulator:
        result = await sync(settings_for(emulator, tmp_path / "out", chunk_size=256 * 1024))
    manifest = json.loads((tmp_path / "out/.mirror/manifest.json").read_text())
    source = expected_tree(content_root)
    assert result.ok and not result.unverified
    assert set(manifest["files"]) == set(source)
    for path, entry in manifest["files"].items():
        assert entry["sha256"] == hashlib.sha256(source[path]).hexdigest()
        assert entry["size"] == len(source[path]) and entry["verified"] is True
    assert manifest["files"]["weights/model-00001.safetensors"]["method"] == "multipart-md5 (1 MiB parts)"
    assert manifest["files"]["config.json"]["method"] == "md5"
    assert manifest["content"] == {"hub": "SageMakerPublicHub", "type": "Model", "name": "small-model",
                                   "version": "1.0.0"}


async def test_a_second_run_downloads_nothing(emulator_factory, tmp_path):
    recorder = Recorder()
    async with emulator_factory() as emulator:
        await sync(settings_for(emulator, tmp_path / "out"))
        before = (await stats(emulator.endpoint))["bytes_served"]
        again = await sync(settings_for(emulator, tmp_path / "out"), observer=recorder)
        after = await stats(emulator.endpoint)
    assert after["bytes_served"] == before
    assert sorted(again.skipped) == sorted(SMALL_MODEL) and again.bytes_downloaded == 0
    assert after["requests"]["304"] == len(SMALL_MODEL) - 1  # the empty file has no ETag: 416 */0 says it
    assert after["requests"]["416"] == 2
    assert not recorder.of(events.FileStarted)


async def test_a_byte_flipped_on_the_wire_is_caught_and_fetched_again(emulator_factory, content_root, tmp_path):
    recorder = Recorder()
    async with emulator_factory(faults={"flip": 1.0}, fault_budget=2) as emulator:
        result = await sync(settings_for(emulator, tmp_path / "out"), observer=recorder)
        counters = await stats(emulator.endpoint)
    assert counters["faults"] == {"flip": 2}
    assert result.ok and tree(tmp_path / "out") == expected_tree(content_root)
    restarts = recorder.of(events.FileRestarted)
    assert len(restarts) == 2 and all("checksum mismatch" in r.reason for r in restarts)


async def test_a_file_that_never_verifies_fails_and_never_appears(emulator_factory, tmp_path):
    async with emulator_factory(faults={"flip": 1.0}) as emulator:
        result = await sync(settings_for(emulator, tmp_path / "out", name="slow-model"))
    assert "big.bin" in result.failed and "after 3 downloads" in result.failed["big.bin"]
    assert not (tmp_path / "out" / "big.bin").exists() and not (tmp_path / "out" / "big.bin.part").exists()


async def test_an_object_changed_between_runs_is_fetched_again(emulator_factory, own_root, tmp_path):
    recorder = Recorder()
    async with emulator_factory(root=own_root) as emulator:
        await sync(settings_for(emulator, tmp_path / "out"))
        changed = own_root / "small-model/1.0.0/tokenizer.json"
        changed.write_bytes(os.urandom(changed.stat().st_size))
        result = await sync(settings_for(emulator, tmp_path / "out"), observer=recorder)
    assert [r.path for r in recorder.of(events.FileRestarted)] == ["tokenizer.json"]
    assert "changed on the server" in recorder.of(events.FileRestarted)[0].reason
    assert len(result.skipped) == len(SMALL_MODEL) - 1
    assert tree(tmp_path / "out") == tree(own_root / "small-model/1.0.0")


async def test_an_object_changed_while_partial_restarts_from_zero(emulator_factory, own_root, tmp_path):
    recorder = Recorder()
    big = own_root / "small-model/1.0.0/weights/model-00001.safetensors"
    async with emulator_factory(root=own_root, conn_rate=512 * 1024) as emulator:
        with anyio.move_on_after(1.5):  # stops the run midway, like an interrupted job
            await sync(settings_for(emulator, tmp_path / "out", chunk_size=256 * 1024, concurrency=2))
        assert (tmp_path / "out/weights/model-00001.safetensors.part").exists()
        big.write_bytes(os.urandom(big.stat().st_size))
        result = await sync(settings_for(emulator, tmp_path / "out", chunk_size=256 * 1024, concurrency=8),
                            observer=recorder)
        counters = await stats(emulator.endpoint)
    assert result.ok and tree(tmp_path / "out") == tree(own_root / "small-model/1.0.0")
    assert counters["requests"].get("412", 0) >= 1
    assert any(r.path == "weights/model-00001.safetensors" and "412" in r.reason
               for r in recorder.of(events.FileRestarted))


async def test_resume_fetches_only_what_is_missing(emulator_factory, content_root, tmp_path):
    size = sum(SMALL_MODEL.values())
    async with emulator_factory(conn_rate=512 * 1024) as emulator:
        with anyio.move_on_after(2):
            await sync(settings_for(emulator, tmp_path / "out", chunk_size=128 * 1024, concurrency=4))
        first = (await stats(emulator.endpoint))["bytes_served"]
        assert 0 < first < size
        recorder = Recorder()
        result = await sync(settings_for(emulator, tmp_path / "out", chunk_size=128 * 1024, concurrency=4),
                            observer=recorder)
        total = (await stats(emulator.endpoint))["bytes_served"]
    assert result.ok and tree(tmp_path / "out") == expected_tree(content_root)
    assert total <= size + 4 * 128 * 1024  # at most the chunks in flight are fetched twice
    assert any(e.resumed_bytes > 0 for e in recorder.of(events.FileStarted))


async def test_unverifiable_objects_are_reported_and_can_be_required(emulator_factory, tmp_path):
    root = tmp_path / "kms-content"
    write_synthetic(root, "kms-model", "1.0.0", {"a.bin": 5000}, seed=9, kms=True)
    async with emulator_factory(root=root) as emulator:
        result = await sync(settings_for(emulator, tmp_path / "out", name="kms-model"))
        again = await sync(settings_for(emulator, tmp_path / "out", name="kms-model"))
        strict = await sync(settings_for(emulator, tmp_path / "strict", name="kms-model", require_verified=True))
    assert result.ok and "SSE-KMS" in result.unverified["a.bin"]
    assert again.skipped == ["a.bin"] and "SSE-KMS" in again.unverified["a.bin"] and not again.verified
    manifest = json.loads((tmp_path / "out/.mirror/manifest.json").read_text())
    assert manifest["files"]["a.bin"]["verified"] is None and "SSE-KMS" in manifest["files"]["a.bin"]["detail"]
    assert "--require-verified" in strict.failed["a.bin"] and not (tmp_path / "strict/a.bin").exists()


@pytest.mark.parametrize("algorithm", ["sha256", "crc32c", "crc64nvme"])
async def test_checksum_headers_are_used_when_sent(emulator_factory, tmp_path, algorithm):
    async with emulator_factory(checksum=algorithm) as emulator:
        result = await sync(settings_for(emulator, tmp_path / "out"))
    manifest = json.loads((tmp_path / "out/.mirror/manifest.json").read_text())
    assert result.ok and {e["method"] for e in manifest["files"].values()} == {algorithm, "empty object"}


async def test_extra_files_are_kept_unless_delete_is_given(emulator_factory, tmp_path):
    dest = tmp_path / "out"
    async with emulator_factory() as emulator:
        await sync(settings_for(emulator, dest))
        (dest / "old-weights.bin").write_bytes(b"stale")
        (dest / "old" / "dir").mkdir(parents=True)
        (dest / "old" / "dir" / "x.json").write_text("{}")
        kept = await sync(settings_for(emulator, dest))
        assert kept.extra == ["old-weights.bin", "old/dir/x.json"] and not kept.deleted
        assert (dest / "old-weights.bin").exists()
        removed = await sync(settings_for(emulator, dest, delete=True))
    assert removed.deleted == ["old-weights.bin", "old/dir/x.json"]
    assert not (dest / "old").exists() and (dest / ".mirror" / "journal.sqlite").exists()
    assert set(tree(dest)) == set(SMALL_MODEL)


async def test_verify_catches_flipped_truncated_missing_and_extra(emulator_factory, tmp_path):
    dest = tmp_path / "out"
    async with emulator_factory() as emulator:
        await sync(settings_for(emulator, dest))
    assert (await verify(dest)).ok
    flipped = bytearray((dest / "tokenizer.json").read_bytes())
    flipped[100] ^= 0x01
    (dest / "tokenizer.json").write_bytes(bytes(flipped))
    with open(dest / "nested/deeper/vocab.txt", "r+b") as handle:
        handle.truncate(10)
    (dest / "config.json").unlink()
    (dest / "stray.bin").write_bytes(b"?")
    report = await verify(dest)
    assert not report.ok and report.checked == len(SMALL_MODEL)
    assert set(report.differs) == {"tokenizer.json", "nested/deeper/vocab.txt"}
    assert "sha256" in report.differs["tokenizer.json"] and "size" in report.differs["nested/deeper/vocab.txt"]
    assert report.missing == ["config.json"] and report.extra == ["stray.bin"]


async def test_a_destination_in_use_is_refused(emulator_factory, tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    async with emulator_factory() as emulator:
        with DestinationLock(dest):
            with pytest.raises(DestinationBusy, match=f"pid {os.getpid()}"):
                await sync(settings_for(emulator, dest))
        assert (await sync(settings_for(emulator, dest))).ok  # released: the next run proceeds
