"""The fault matrix: every emulator fault alone, then all of them at once.

A run either ends with every file byte-identical, or names the files that failed while
every completed file is verified, and a later run finishes the rest.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mirror import events, sync
from mirror.config import AwsSettings
from tests.conftest import settings_for, stats, tree
from tests.integration.test_sync import Recorder, expected_tree

pytestmark = pytest.mark.anyio

CHUNK = 256 * 1024
OBJECT_FAULTS = ("slowdown", "internal", "reset", "truncate", "ignore-range", "flip", "expire-early")
API_FAULTS = ("throttle", "api-stall", "token-refused")


def faulty_settings(emulator, dest: Path, **changes):
    aws = AwsSettings(region="us-east-1", endpoint_url=emulator.endpoint, api_attempts=8, api_timeout=1.0)
    return settings_for(emulator, dest, chunk_size=CHUNK, retries=12, aws=aws, **changes)


@pytest.mark.parametrize("fault, rate, budget", [
    ("slowdown", 0.3, None), ("internal", 0.3, None), ("reset", 0.3, None), ("truncate", 0.3, None),
    ("ignore-range", 0.5, None), ("flip", 1.0, 2), ("expire-early", 0.3, None),
    ("throttle", 0.5, None), ("api-stall", 1.0, 1),
])
async def test_each_fault_alone_is_survived(emulator_factory, content_root, tmp_path, fault, rate, budget):
    recorder = Recorder()
    async with emulator_factory(faults={fault: rate}, fault_budget=budget, seed=5, stall=2.0) as emulator:
        result = await sync(faulty_settings(emulator, tmp_path / "out", page_size=1), observer=recorder)
        counters = await stats(emulator.endpoint)
    assert counters["faults"].get(fault, 0) >= 1, "the fault was never injected"
    assert result.ok, result.failed
    assert tree(tmp_path / "out") == expected_tree(content_root)


async def test_a_refused_token_on_renewal_repages_from_the_start(emulator_factory, content_root, tmp_path):
    recorder = Recorder()
    async with emulator_factory(faults={"token-refused": 1.0}, url_ttl=2, conn_rate=256 * 1024) as emulator:
        result = await sync(faulty_settings(emulator, tmp_path / "out", page_size=2, concurrency=4),
                            observer=recorder)
        counters = await stats(emulator.endpoint)
    assert counters["faults"].get("token-refused", 0) >= 1
    assert result.ok and tree(tmp_path / "out") == expected_tree(content_root)
    assert recorder.of(events.UrlsRefreshed)


async def test_all_faults_at_once_then_a_clean_run_finishes(emulator_factory, content_root, tmp_path):
    faults = {name: 0.07 for name in OBJECT_FAULTS + API_FAULTS}
    dest = tmp_path / "out"
    async with emulator_factory(faults=faults, seed=2026, stall=2.0) as emulator:
        first = await sync(faulty_settings(emulator, dest, page_size=2, concurrency=8))
        counters = await stats(emulator.endpoint)
    assert sum(counters["faults"].values()) >= 3
    source, mirrored = expected_tree(content_root), tree(dest)
    for path in first.completed:  # whatever finished is right, faults or not
        assert mirrored[path] == source[path]
    assert not set(first.failed) & set(mirrored)
    async with emulator_factory() as emulator:
        second = await sync(settings_for(emulator, dest))
    assert second.ok and tree(dest) == source
    assert set(second.skipped) == set(first.completed)  # nothing verified is fetched again
