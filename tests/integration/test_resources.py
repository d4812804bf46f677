"""Signals, a full or read-only disk, permissions, bounded resources, and load."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from mirror.emulator import write_synthetic
from mirror.errors import ExitCode
from tests.conftest import tree
from tests.integration.test_cli import _env, emulator_process, run_cli

MiB = 1024 * 1024


def start_sync(endpoint: str, name: str, dest: Path, *flags: str, user: int | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mirror", "sync", name, "--dest", str(dest),
                             "--endpoint-url", endpoint, *flags], env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, user=user)


def emulator_stats(endpoint: str) -> dict:
    with urllib.request.urlopen(f"{endpoint}/_emulator/stats", timeout=10) as response:
        return json.load(response)


def wait_for(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


@contextmanager
def tmpfs(path: Path, size: str, *options: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *options]), "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'not permitted'})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def big_content(tmp_path: Path) -> Path:
    root = tmp_path / "content"
    write_synthetic(root, "big-model", "1.0.0", {"a.bin": 6 * MiB, "b.bin": 2 * MiB, "c.json": 700}, seed=3)
    return root


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, ExitCode.INTERRUPTED), (signal.SIGTERM, ExitCode.TERMINATED)])
def test_a_signal_stops_cleanly_and_the_next_run_resumes(big_content, tmp_path, signum, code):
    dest = tmp_path / "out"
    with emulator_process(big_content, "--conn-rate", "1MiB") as endpoint:
        process = start_sync(endpoint, "big-model", dest, "--chunk-size", "256KiB", "--concurrency", "4")
        wait_for(lambda: emulator_stats(endpoint)["bytes_served"] > 2 * MiB)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=20)
        assert process.returncode == code, stderr
        assert "interrupted" in stderr or "terminated" in stderr
        assert list(dest.rglob("*.part"))  # partial work is kept
        served_before = emulator_stats(endpoint)["bytes_served"]
        done = run_cli("sync", "big-model", "--dest", str(dest), "--endpoint-url", endpoint,
                       "--chunk-size", "256KiB", "--concurrency", "4")
        served = emulator_stats(endpoint)["bytes_served"] - served_before
    assert done.returncode == 0, done.stderr
    assert tree(dest) == tree(big_content / "big-model" / "1.0.0")
    assert served < 8 * MiB  # resumed, not started over


def test_a_disk_that_fills_up_stops_with_a_clear_error_and_resumes(big_content, tmp_path):
    dest = tmp_path / "small-disk"
    with emulator_process(big_content) as endpoint, tmpfs(dest, "5m"):
        full = run_cli("sync", "big-model", "--dest", str(dest), "--endpoint-url", endpoint, "--chunk-size", "1MiB")
        assert full.returncode == ExitCode.DISK_ERROR, full.stderr
        assert "no space left" in full.stderr and "free" in full.stderr
        assert full.stderr.count("\n") <= 3
        subprocess.run(["mount", "-o", "remount,size=32m", str(dest)], check=True)
        again = run_cli("sync", "big-model", "--dest", str(dest), "--endpoint-url", endpoint)
        assert again.returncode == 0, again.stderr
        assert tree(dest) == tree(big_content / "big-model" / "1.0.0")


def test_a_read_only_destination_is_a_clear_error(big_content, tmp_path):
    dest = tmp_path / "ro"
    with emulator_process(big_content) as endpoint, tmpfs(dest, "16m", "ro"):
        done = run_cli("sync", "big-model", "--dest", str(dest), "--endpoint-url", endpoint)
    assert done.returncode == ExitCode.DISK_ERROR
    assert "read-only" in done.stderr or "not writable" in done.stderr


def _can_run_as(user: int) -> bool:
    if os.geteuid() != 0:
        return False
    try:
        return subprocess.run([sys.executable, "-c", "import mirror"], user=user, capture_output=True,
                              env=_env(), timeout=60).returncode == 0
    except OSError:
        return False


def test_a_destination_that_refuses_writes_is_a_clear_error(big_content, tmp_path):
    """An immutable folder refuses every write, even root's (where chattr is allowed)."""
    dest = tmp_path / "immutable"
    dest.mkdir()
    if subprocess.run(["chattr", "+i", str(dest)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not permitted here")
    try:
        with emulator_process(big_content) as endpoint:
            done = run_cli("sync", "big-model", "--dest", str(dest), "--endpoint-url", endpoint)
    finally:
        subprocess.run(["chattr", "-i", str(dest)], capture_output=True)
    assert done.returncode == ExitCode.DISK_ERROR, done.stderr
    assert "not writable" in done.stderr or "permission denied" in done.stderr


def test_a_destination_without_permission_is_a_clear_error(big_content, tmp_path):
    if not _can_run_as(65534):
        pytest.skip("cannot run this Python as an unprivileged user here (not root, or the interpreter "
                    "and package are not readable by 'nobody')")
    dest = tmp_path / "root-only"
    dest.mkdir(mode=0o755)
    tmp_path.chmod(0o755)
    with emulator_process(big_content) as endpoint:
        process = start_sync(endpoint, "big-model", dest, user=65534)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == ExitCode.DISK_ERROR, stderr
    assert "not writable" in stderr or "permission denied" in stderr


@pytest.mark.slow
def test_descriptors_and_memory_stay_bounded_over_5000_files(tmp_path):
    root = tmp_path / "content"
    write_synthetic(root, "many", "1.0.0", {f"d{i // 500}/f{i:05d}.bin": 512 + i % 4096 for i in range(5000)})
    peak_fds = peak_rss_kib = 0
    with emulator_process(root) as endpoint:
        process = start_sync(endpoint, "many", tmp_path / "out", "--concurrency", "16")
        while process.poll() is None:
            try:
                peak_fds = max(peak_fds, len(os.listdir(f"/proc/{process.pid}/fd")))
                status = Path(f"/proc/{process.pid}/status").read_text()
                peak_rss_kib = max(peak_rss_kib, int(status.split("VmHWM:")[1].split()[0]))
            except (OSError, IndexError):
                pass
            time.sleep(0.02)
    assert process.returncode == 0, process.stderr.read()
    assert len(tree(tmp_path / "out")) == 5000
    assert peak_fds < 120, peak_fds  # 16 connections, 16 files, threads' pipes: not one per file
    assert peak_rss_kib < 250 * 1024, peak_rss_kib


@pytest.mark.slow
def test_64_connections_sustained(tmp_path):
    root = tmp_path / "content"
    write_synthetic(root, "wide", "1.0.0", {f"w{i}.bin": 4 * MiB for i in range(8)}, seed=8)
    with emulator_process(root, "--conn-rate", "2MiB") as endpoint:
        done = run_cli("sync", "wide", "--dest", str(tmp_path / "out"), "--endpoint-url", endpoint,
                       "--concurrency", "64", "--chunk-size", "256KiB")
        counters = emulator_stats(endpoint)
    assert done.returncode == 0, done.stderr
    assert counters["max_in_flight"] == 64
    assert tree(tmp_path / "out") == tree(root / "wide" / "1.0.0")


@pytest.mark.slow
def test_20000_tiny_files(tmp_path):
    root = tmp_path / "content"
    write_synthetic(root, "tiny", "1.0.0", {f"s{i // 1000:02d}/t{i:05d}": 1 + i % 700 for i in range(20000)})
    with emulator_process(root) as endpoint:
        done = run_cli("sync", "tiny", "--dest", str(tmp_path / "out"), "--endpoint-url", endpoint, timeout=300)
    assert done.returncode == 0, done.stderr
    assert tree(tmp_path / "out") == tree(root / "tiny" / "1.0.0")
