"""Benchmark `mirror` against aria2c, hf_transfer and curl on the same loopback emulator.

    python -m benchmarks.run            # the full corpora (about 10 GiB of disk, several minutes)
    python -m benchmarks.run --quick    # a small version, under a minute

Corpora: "model" (4 x 1 GiB multipart + 1 x 512 MiB single-part + 50 small configs),
"small" (5,000 files of 4-64 KiB over 50 pages), "slow" (a per-connection bandwidth cap
and 50 ms latency: throughput against --concurrency). Each tool runs on the same corpus
in alternating order; every output byte is checked against the source; the table gives
median wall time, throughput, CPU seconds per GiB, peak RSS and time to first byte, with
each peer's ratio to mirror. The floor is max(write the bytes with dd, read them into
/dev/null with parallel curl).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from benchmarks.peers import CONNECTIONS, READ_FLOOR, TOOLS, Entry, Tool
from mirror.config import AwsSettings
from mirror.emulator import write_synthetic
from mirror.hub import ContentRef, HubClient

KiB, MiB, GiB = 1024, 1024**2, 1024**3


@dataclass(frozen=True)
class Corpus:
    name: str
    files: dict[str, int]
    single_part: tuple[str, ...] = ()
    emulator_flags: tuple[str, ...] = ()
    concurrency_sweep: tuple[int, ...] = ()  # "slow": mirror at each of these

    @property
    def size(self) -> int:
        return sum(self.files.values())


def corpora(quick: bool) -> list[Corpus]:
    rng = random.Random(42)
    big, base, configs, small_files = (64 * MiB, 32 * MiB, 10, 500) if quick else (GiB, 512 * MiB, 50, 5000)
    model = {f"model-{i:05d}-of-00004.safetensors": big for i in range(1, 5)}
    model["consolidated.pth"] = base
    model.update({f"configs/config-{i:02d}.json": rng.randint(1 * KiB, 20 * KiB) for i in range(configs)})
    small = {f"shard-{i // 100:02d}/part-{i:05d}.bin": rng.randint(4 * KiB, 64 * KiB) for i in range(small_files)}
    slow_files = 4 if quick else 8
    slow = {f"weights-{i}.bin": (4 if quick else 8) * MiB for i in range(slow_files)}
    return [
        Corpus("model", model, single_part=("/consolidated.pth",)),
        Corpus("small", small),
        Corpus("slow", slow, emulator_flags=("--conn-rate", "2MiB", "--latency", "50"),
               concurrency_sweep=(1, 4) if quick else (1, 2, 4, 8, 16)),
    ]


@dataclass
class Sample:
    wall: float
    cpu: float
    rss_mib: float
    ttfb: float | None


@dataclass
class Row:
    tool: str
    samples: list[Sample] = field(default_factory=list)
    note: str = ""

    def median(self, attribute: str) -> float | None:
        values = [getattr(s, attribute) for s in self.samples if getattr(s, attribute) is not None]
        return statistics.median(values) if values else None


class Emulator:
    """`mirror emulator` in its own process, on the plain asyncio loop (sendfile)."""

    def __init__(self, root: Path, flags: tuple[str, ...]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mirror", "emulator", "--root", str(root), "--url-ttl", "3600",
             "--part-size", "8MiB", *flags], stdout=subprocess.PIPE, text=True)
        self.endpoint = self.process.stdout.readline().split()[1]

    def bytes_served(self) -> int:
        with urllib.request.urlopen(f"{self.endpoint}/_emulator/stats", timeout=10) as response:
            return json.load(response)["bytes_served"]

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def list_urls(endpoint: str, name: str) -> list[Entry]:
    async def listing() -> list[Entry]:
        entries: list[Entry] = []
        ref = ContentRef("SageMakerPublicHub", "Model", name, None, False, None)
        async with HubClient.open(AwsSettings(endpoint_url=endpoint)) as hub:
            async for page in hub.pages(ref, 100):
                entries += [(path.lstrip("/"), url.url) for path, url in page.urls.items()]
        return entries

    return anyio.run(listing)


def run_once(argv: list[str], emulator: Emulator) -> Sample:
    """Run one tool to completion: wall and CPU time, peak RSS, time to first byte served.

    Peak RSS is the kernel's VmHWM of the tool's own image, polled until it exits
    (ru_maxrss would also count the benchmark's memory, inherited across fork).
    """
    baseline = emulator.bytes_served()
    seen: dict[str, float] = {"rss_kib": 0.0}
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watcher = threading.Thread(target=_watch, args=(emulator, baseline, started, seen, process.pid))
    watcher.start()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    seen["exited"] = 1
    watcher.join()
    if status != 0:
        raise RuntimeError(f"{argv[0]} exited with {status}: {process.stderr.read().decode()[-500:]}")
    return Sample(wall, usage.ru_utime + usage.ru_stime, seen["rss_kib"] / 1024, seen.get("ttfb"))


def _watch(emulator: Emulator, baseline: int, started: float, seen: dict[str, float], pid: int) -> None:
    while "exited" not in seen:
        if "ttfb" not in seen and emulator.bytes_served() > baseline:
            seen["ttfb"] = time.perf_counter() - started
        seen["rss_kib"] = max(seen["rss_kib"], _peak_rss_kib(pid))
        time.sleep(0.005)


def _peak_rss_kib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1])
    except OSError:
        pass
    return 0.0


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(4 * MiB):
            digest.update(block)
    return digest.hexdigest()


def check_output(dest: Path, expected: dict[str, str]) -> None:
    with ThreadPoolExecutor(4) as pool:
        actual = dict(zip(expected, pool.map(lambda p: sha256_of(dest / p) if (dest / p).is_file() else None,
                                             expected)))
    wrong = [p for p in expected if actual[p] != expected[p]]
    if wrong:
        raise RuntimeError(f"{len(wrong)} files differ from the source under {dest}, e.g. {wrong[0]}")


def dd_floor(scratch: Path, size: int) -> Sample:
    target = scratch / "dd-floor.bin"
    started = time.perf_counter()
    subprocess.run(["dd", "if=/dev/zero", f"of={target}", "bs=8M", f"count={max(1, size // (8 * MiB))}"],
                   check=True, capture_output=True)
    wall = time.perf_counter() - started
    target.unlink()
    return Sample(wall, 0.0, 0.0, None)


def bench_corpus(corpus: Corpus, work: Path, runs: int, tools: list[Tool]) -> tuple[list[Row], list[str]]:
    root = work / f"content-{corpus.name}"
    if not root.exists():
        write_synthetic(root, corpus.name, "1.0.0", corpus.files, seed=7, single_part=corpus.single_part)
    source = root / corpus.name / "1.0.0"
    with ThreadPoolExecutor(4) as pool:
        expected = dict(zip(corpus.files, pool.map(lambda p: sha256_of(source / p), corpus.files)))
    emulator = Emulator(root, corpus.emulator_flags)
    notes: list[str] = []
    try:
        entries = list_urls(emulator.endpoint, corpus.name)
        if corpus.concurrency_sweep:
            return _sweep(corpus, work, emulator, entries, expected), notes
        rows = {tool.name: Row(tool.name) for tool in tools}
        floor_read, floor_write = Row(READ_FLOOR.name), Row("write floor (dd)")
        for run in range(runs):
            order = tools if run % 2 == 0 else list(reversed(tools))
            for tool in order:
                rows[tool.name].samples.append(_run_tool(tool, corpus, work, emulator, entries, expected))
            floor_read.samples.append(_run_tool(READ_FLOOR, corpus, work, emulator, entries, None))
            floor_write.samples.append(dd_floor(work, corpus.size))
        return [*rows.values(), floor_read, floor_write], notes
    finally:
        emulator.close()


def _run_tool(tool: Tool, corpus: Corpus, work: Path, emulator: Emulator, entries: list[Entry],
              expected: dict[str, str] | None, connections: int = CONNECTIONS) -> Sample:
    dest = work / f"out-{corpus.name}"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir()
    sample = run_once(tool.command(emulator.endpoint, corpus.name, entries, dest, work, connections), emulator)
    if expected is not None:
        check_output(dest, expected)
    shutil.rmtree(dest, ignore_errors=True)
    return sample


def _sweep(corpus: Corpus, work: Path, emulator: Emulator, entries: list[Entry],
           expected: dict[str, str]) -> list[Row]:
    rows = []
    for concurrency in corpus.concurrency_sweep:
        row = Row(f"mirror --concurrency {concurrency}")
        row.samples.append(_run_tool(TOOLS["mirror"], corpus, work, emulator, entries, expected, concurrency))
        rows.append(row)
    if TOOLS["aria2c"].available() is None:
        row = Row(f"aria2c -x{CONNECTIONS}")
        row.samples.append(_run_tool(TOOLS["aria2c"], corpus, work, emulator, entries, expected))
        rows.append(row)
    return rows


def print_table(corpus: Corpus, rows: list[Row]) -> None:
    mirror_rows = [r for r in rows if r.tool.startswith("mirror")]
    mirror_wall = mirror_rows[-1].median("wall") if mirror_rows else None  # a sweep: its widest run
    floor = max((r.median("wall") or 0) for r in rows if "floor" in r.tool) if any("floor" in r.tool for r in rows) \
        else None
    print(f"\n## {corpus.name}: {len(corpus.files)} files, {corpus.size / GiB:.2f} GiB")
    print(f"{'tool':34} {'wall s':>8} {'MiB/s':>8} {'files/s':>8} {'CPU s/GiB':>10} {'RSS MiB':>8} "
          f"{'TTFB s':>7} {'mirror÷tool':>11}")
    for row in rows:
        wall = row.median("wall")
        if wall is None:
            print(f"{row.tool:34} skipped: {row.note}")
            continue
        cpu, rss, ttfb = row.median("cpu"), row.median("rss_mib"), row.median("ttfb")
        ratio = f"{mirror_wall / wall:.2f}" if mirror_wall and not row.tool.startswith("mirror") else ""
        print(f"{row.tool:34} {wall:8.2f} {corpus.size / MiB / wall:8.1f} {len(corpus.files) / wall:8.0f} "
              f"{(cpu or 0) / (corpus.size / GiB):10.2f} {rss or 0:8.0f} {'' if ttfb is None else f'{ttfb:.2f}':>7} "
              f"{ratio:>11}")
    if floor and mirror_wall:
        print(f"floor = max(read, write) = {floor:.2f} s; mirror/floor = {mirror_wall / floor:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small corpora, one run: a smoke test")
    parser.add_argument("--runs", type=int, help="runs per tool (default 3, 1 with --quick)")
    parser.add_argument("--corpus", action="append", choices=("model", "small", "slow"), help="only these")
    parser.add_argument("--tools", default="mirror,aria2c,hf_transfer,curl", help="comma-separated")
    parser.add_argument("--workdir", type=Path, help="keep generated corpora here between invocations")
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    runs = args.runs or (1 if args.quick else 3)
    tools, skipped = [], []
    for name in args.tools.split(","):
        why = TOOLS[name].available()
        (skipped.append(Row(name, note=why)) if why else tools.append(TOOLS[name]))
    work = args.workdir or Path(tempfile.mkdtemp(prefix="mirror-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"mirror benchmark: {'quick' if args.quick else 'full'}, {runs} run(s), {os.cpu_count()} CPUs, "
          f"{CONNECTIONS} connections per tool, work dir {work}")
    try:
        for corpus in corpora(args.quick):
            if args.corpus and corpus.name not in args.corpus:
                continue
            rows, _ = bench_corpus(corpus, work, runs, tools)
            print_table(corpus, rows + ([] if corpus.concurrency_sweep else skipped))
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
