"""Real processes killed with SIGKILL, and two processes on one destination."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mirror.emulator import write_synthetic
from mirror.errors import ExitCode
from tests.conftest import tree
from tests.integration.test_cli import _env, emulator_process, run_cli

MiB = 1024 * 1024
FILES = {"a.safetensors": 6 * MiB, "b.safetensors": 3 * MiB + 123, "c.bin": MiB, "config.json": 900}
CONCURRENCY, CHUNK = 4, 256 * 1024


def served(endpoint: str) -> int:
    with urllib.request.urlopen(f"{endpoint}/_emulator/stats", timeout=10) as response:
        return json.load(response)["bytes_served"]


def start_sync(endpoint: str, dest: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mirror", "sync", "kill-model", "--dest", str(dest),
                             "--endpoint-url", endpoint, "--concurrency", str(CONCURRENCY),
                             "--chunk-size", str(CHUNK)], env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


@pytest.fixture
def content(tmp_path: Path) -> Path:
    root = tmp_path / "content"
    write_synthetic(root, "kill-model", "1.0.0", FILES, seed=5)
    return root


@pytest.mark.slow
def test_sigkill_at_random_instants_then_resume(content, tmp_path):
    """Each kill may cost at most the chunks in flight: concurrency x chunk size."""
    dest, kills = tmp_path / "out", 0
    with emulator_process(content, "--conn-rate", "1MiB", "--part-size", "1MiB") as endpoint:
        for delay in (random.Random(2026 + n).uniform(0.6, 2.2) for n in range(3)):
            process = start_sync(endpoint, dest)
            time.sleep(delay)
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                kills += 1
            process.wait(timeout=30)
        final = run_cli("sync", "kill-model", "--dest", str(dest), "--endpoint-url", endpoint,
                        "--concurrency", str(CONCURRENCY), "--chunk-size", str(CHUNK))
        total_served = served(endpoint)
    assert final.returncode == 0, final.stderr
    assert tree(dest) == tree(content / "kill-model" / "1.0.0")
    assert kills >= 2  # the premise: the runs really were cut short
    assert total_served <= sum(FILES.values()) + kills * CONCURRENCY * CHUNK
    assert run_cli("verify", str(dest)).returncode == 0


def test_a_second_process_on_the_same_destination_exits_at_once(content, tmp_path):
    dest = tmp_path / "out"
    with emulator_process(content, "--conn-rate", "256KiB") as endpoint:
        first = start_sync(endpoint, dest)
        try:
            lock = dest / ".mirror" / "lock"
            deadline = time.monotonic() + 20
            while not (lock.exists() and lock.read_text().strip() == str(first.pid)):
                assert time.monotonic() < deadline, "the first run never took the lock"
                time.sleep(0.05)
            second = run_cli("sync", "kill-model", "--dest", str(dest), "--endpoint-url", endpoint)
            assert second.returncode == ExitCode.BUSY
            assert f"another mirror (pid {first.pid})" in second.stderr
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=30)
        assert first.returncode == -signal.SIGKILL
        third = run_cli("sync", "kill-model", "--dest", str(dest), "--endpoint-url", endpoint,
                        "--concurrency", "16", "--chunk-size", str(CHUNK))
    assert third.returncode == 0, third.stderr  # the dead run's lock is taken over
    assert tree(dest) == tree(content / "kill-model" / "1.0.0")
