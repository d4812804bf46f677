"""How much wall time verification adds: the same sync with hashing on, and with the
hasher's work removed (it still walks the file, so only the hash computation is measured).

    python -m benchmarks.hash_overhead [--size-mib 1536] [--runs 3]

The emulator runs in its own process (sendfile), on loopback; runs alternate.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mirror import integrity
from mirror.config import AwsSettings, SyncSettings
from mirror.emulator import write_synthetic
from mirror.runner import sync_blocking

MiB = 1024 * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1536)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    with tempfile.TemporaryDirectory(prefix="mirror-bench-") as work:
        root = Path(work) / "content"
        big = args.size_mib // 3
        write_synthetic(root, "bench-model", "1.0.0", {"a.safetensors": 2 * big * MiB, "b.bin": big * MiB}, seed=1)
        emulator = subprocess.Popen([sys.executable, "-m", "mirror", "emulator", "--root", str(root)],
                                    stdout=subprocess.PIPE, text=True)
        endpoint = emulator.stdout.readline().split()[1]
        try:
            timings = {"verified": [], "hashing removed": []}
            for run in range(args.runs):
                for label in timings:
                    timings[label].append(_timed_sync(endpoint, Path(work) / f"out-{label}-{run}",
                                                      hashing=label == "verified"))
        finally:
            emulator.terminate()
    size = 3 * big * MiB
    for label, values in timings.items():
        median = statistics.median(values)
        print(f"{label:16} median {median:6.2f} s  {size / median / MiB:7.1f} MiB/s  runs {values}")
    on, off = (statistics.median(v) for v in timings.values())
    print(f"verification adds {100 * (on - off) / off:+.1f}% wall time")


def _timed_sync(endpoint: str, dest: Path, *, hashing: bool) -> float:
    update, verdict = integrity.FileHasher.update, integrity.FileHasher.verdict
    if not hashing:  # still read the file back, but hash nothing and accept it
        integrity.FileHasher.update = lambda self, block: setattr(self, "position", self.position + len(block))
        integrity.FileHasher.verdict = lambda self: integrity.Verdict(True, "not hashed", "")
    try:
        started = time.perf_counter()
        result = sync_blocking(SyncSettings(name="bench-model", dest=dest, aws=AwsSettings(endpoint_url=endpoint)))
        elapsed = time.perf_counter() - started
    finally:
        integrity.FileHasher.update, integrity.FileHasher.verdict = update, verdict
    assert result.completed and not result.failed, result.failed
    return round(elapsed, 3)


if __name__ == "__main__":
    main()
