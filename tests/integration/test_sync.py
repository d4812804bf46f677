"""`mirror.sync()` end to end against the emulator: real sockets, real files."""

from __future__ import annotations

from pathlib import Path

import pytest

from mirror import ContentNotFound, EulaRequired, HubError, events, sync
from tests.conftest import SMALL_MODEL, settings_for, stats, tree

pytestmark = pytest.mark.anyio


def expected_tree(content_root: Path, name: str = "small-model", version: str = "1.0.0") -> dict[str, bytes]:
    return tree(content_root / name / version)


class Recorder(list):
    def __call__(self, event: events.Event) -> None:
        self.append(event)

    def of(self, kind: type) -> list:
        return [e for e in self if isinstance(e, kind)]


async def test_mirror_reproduces_the_content_across_pages(emulator_factory, content_root, tmp_path):
    async with emulator_factory() as emulator:
        result = await sync(settings_for(emulator, tmp_path / "out", page_size=2, chunk_size=256 * 1024))
        counters = await stats(emulator.endpoint)
    assert result.ok and len(result.completed) == len(SMALL_MODEL)
    assert tree(tmp_path / "out") == expected_tree(content_root)
    assert counters["api_calls"]["CreateHubContentPresignedUrls"] == 4  # 7 files, 2 a page
    assert not list((tmp_path / "out").rglob("*.part"))


async def test_pages_are_requested_only_as_workers_free_up(emulator_factory, tmp_path):
    recorder = Recorder()
    async with emulator_factory(latency=0.02) as emulator:
        await sync(settings_for(emulator, tmp_path / "out", page_size=1, concurrency=1), observer=recorder)
    finished = 0
    for event in recorder:
        finished += isinstance(event, events.FileFinished)
        if isinstance(event, events.PageListed) and event.page >= 2:
            # page N is listed only after file N-2 finished: one file in hand, one waiting
            assert finished >= event.page - 1


async def test_a_file_outliving_its_urls_completes_with_renewal_ahead_of_expiry(emulator_factory, content_root, tmp_path):
    """768 KiB at 2 x 64 KiB/s takes 6 s: three lifetimes of a 2 s URL."""
    recorder = Recorder()
    async with emulator_factory(url_ttl=2, conn_rate=64 * 1024) as emulator:
        result = await sync(settings_for(emulator, tmp_path / "out", name="slow-model", concurrency=2,
                                         chunk_size=64 * 1024), observer=recorder)
        counters = await stats(emulator.endpoint)
    assert result.ok
    assert tree(tmp_path / "out") == expected_tree(content_root, "slow-model")
    assert "403" not in counters["requests"]
    renewals = recorder.of(events.UrlsRefreshed)
    assert len(renewals) >= 2 and {r.reason for r in renewals} == {"ahead of expiry"}


async def test_without_renewal_ahead_expired_urls_are_renewed_after_403(emulator_factory, content_root, tmp_path):
    recorder = Recorder()
    async with emulator_factory(url_ttl=2, conn_rate=64 * 1024) as emulator:
        result = await sync(settings_for(emulator, tmp_path / "out", name="slow-model", concurrency=2,
                                         chunk_size=64 * 1024, refresh_margin=0), observer=recorder)
        counters = await stats(emulator.endpoint)
    assert result.ok
    assert tree(tmp_path / "out") == expected_tree(content_root, "slow-model")
    assert counters["requests"].get("403", 0) >= 1
    assert {r.reason for r in recorder.of(events.UrlsRefreshed)} == {"expired"}
    assert not recorder.of(events.Retrying)  # an expired URL is not a failure


async def test_200_instead_of_206_still_gives_the_right_bytes(emulator_factory, content_root, tmp_path):
    async with emulator_factory(faults={"ignore-range": 1.0}) as emulator:
        result = await sync(settings_for(emulator, tmp_path / "out", chunk_size=256 * 1024))
        counters = await stats(emulator.endpoint)
    assert result.ok
    assert tree(tmp_path / "out") == expected_tree(content_root)
    assert "206" not in counters["requests"]


async def test_transient_faults_are_retried_until_the_bytes_are_right(emulator_factory, content_root, tmp_path):
    recorder = Recorder()
    faults = {"slowdown": 0.15, "internal": 0.15, "reset": 0.15}
    async with emulator_factory(faults=faults, seed=11) as emulator:
        result = await sync(settings_for(emulator, tmp_path / "out", chunk_size=256 * 1024, retries=20),
                            observer=recorder)
        counters = await stats(emulator.endpoint)
    assert result.ok
    assert tree(tmp_path / "out") == expected_tree(content_root)
    assert counters["requests"].get("503", 0) and counters["requests"].get("500", 0)
    assert any("SlowDown" in r.reason for r in recorder.of(events.Retrying))


async def test_retry_budget_exhausted_fails_the_file_and_keeps_the_others(emulator_factory, content_root, tmp_path):
    async with emulator_factory(faults={"internal": 0.5}, seed=3) as emulator:
        result = await sync(settings_for(emulator, tmp_path / "out", retries=1))
    assert result.failed and result.completed
    assert all("gave up after 2 attempts: HTTP 500" in reason for reason in result.failed.values())
    source, mirrored = expected_tree(content_root), tree(tmp_path / "out")
    assert {path: source[path] for path in result.completed} == {
        path: data for path, data in mirrored.items() if not path.endswith(".part")}
    assert not set(result.failed) & set(mirrored)  # a failed file never appears under its name


async def test_hostile_local_paths_are_refused_and_nothing_escapes(emulator_factory, content_root, tmp_path):
    rewrites = {"/config.json": "/../escape.json", "/tokenizer.json": "/a/../../../escape2.json",
                "/empty.txt": "//tmp/escape3", "/docs/read me+notes.md": "/.mirror/journal.sqlite"}
    dest = tmp_path / "deep" / "out"
    async with emulator_factory(local_path_rewrites=rewrites) as emulator:
        result = await sync(settings_for(emulator, dest))
    assert set(result.refused) == set(rewrites.values())
    assert set(result.completed) == {n for n in SMALL_MODEL if "/" + n not in rewrites}
    assert sorted(p.name for p in tmp_path.rglob("escape*")) == []
    assert (dest / ".mirror" / "journal.sqlite").read_bytes()[:16] == b"SQLite format 3\x00"  # not overwritten


async def test_a_local_path_listed_twice_is_refused_not_guessed(emulator_factory, content_root, tmp_path):
    async with emulator_factory(local_path_rewrites={"/tokenizer.json": "/config.json"}) as emulator:
        result = await sync(settings_for(emulator, tmp_path / "out"))
    assert list(result.refused) == ["/config.json"]
    assert "config.json" not in result.completed and not (tmp_path / "out" / "config.json").exists()
    assert len(result.completed) == len(SMALL_MODEL) - 2


async def test_a_symlink_planted_in_dest_is_not_followed(emulator_factory, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "nested").symlink_to(outside)
    async with emulator_factory() as emulator:
        result = await sync(settings_for(emulator, dest))
    assert "nested/deeper/vocab.txt" in result.failed
    assert list(outside.iterdir()) == []


async def test_missing_content_and_gated_content_raise_clear_errors(emulator_factory, tmp_path):
    async with emulator_factory() as emulator:
        with pytest.raises(ContentNotFound, match="no-such-model"):
            await sync(settings_for(emulator, tmp_path / "a", name="no-such-model"))
        with pytest.raises(EulaRequired, match="--accept-eula"):
            await sync(settings_for(emulator, tmp_path / "b", name="gated-model", version=None))
        result = await sync(settings_for(emulator, tmp_path / "c", name="gated-model", version=None,
                                         accept_eula=True))
    assert result.ok and list(result.completed) == ["weights.bin"]


async def test_unreachable_endpoint_is_a_hub_error(tmp_path):
    from mirror.config import AwsSettings, SyncSettings

    settings = SyncSettings(name="m", dest=tmp_path, aws=AwsSettings(
        region="us-east-1", endpoint_url="http://127.0.0.1:9", api_attempts=1))
    with pytest.raises(HubError, match="cannot reach"):
        await sync(settings)
