"""What --prewarm buys the process that reads the model next.

    python -m benchmarks.prewarm [--size-mib 2048]

Writes a file, evicts it from the page cache (POSIX_FADV_DONTNEED), then times reading
it back cold, and after `disk.prewarm` (what --prewarm calls) plus a pause standing for
the gap before a serving container starts.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from mirror.disk import prewarm

MiB = 1024 * 1024


def evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def timed_read(path: Path) -> float:
    started = time.perf_counter()
    with path.open("rb", buffering=0) as handle:
        while handle.read(8 * MiB):
            pass
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=2048)
    parser.add_argument("--pause", type=float, default=3.0, help="seconds between prewarm and the read")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mirror-prewarm-", dir=Path.cwd()) as work:
        path = Path(work) / "model.bin"
        with path.open("wb") as handle:
            for _ in range(args.size_mib // 64):
                handle.write(os.urandom(64 * MiB))
        evict(path)
        cold = timed_read(path)
        evict(path)
        started = time.perf_counter()
        prewarm(Path(work), ["model.bin"])
        call = time.perf_counter() - started
        time.sleep(args.pause)
        warm = timed_read(path)
    print(f"{args.size_mib} MiB: cold read {cold:.2f} s ({args.size_mib / cold:.0f} MiB/s); "
          f"after prewarm ({call * 1000:.0f} ms call, {args.pause:.0f} s pause) {warm:.2f} s "
          f"({args.size_mib / warm:.0f} MiB/s): {cold / warm:.1f}x faster")


if __name__ == "__main__":
    main()
