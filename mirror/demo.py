"""`mirror demo`: the whole product on generated content, with no AWS account.

Writes ~250 MiB of seeded content (one file large enough to carry a multipart ETag, a
zero-byte file, and the small configs a real model has), serves it from the in-process
emulator, mirrors it with the same `sync()` users run, then compares every byte.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import anyio

from . import events
from .config import MiB, SyncSettings, AwsSettings
from .emulator import Emulator, EmulatorSettings, write_synthetic
from .runner import SyncResult, sync

NAME, VERSION = "demo-llm-7b", "1.0.0"
PART_SIZE = 64 * MiB
FILES = {
    "model-00001-of-00002.safetensors": 150 * MiB,  # above PART_SIZE: a multipart ETag
    "model-00002-of-00002.safetensors": 50 * MiB + 12345,
    "onnx/model.onnx": 40 * MiB,
    "tokenizer.json": 3 * MiB + 777,
    "config.json": 1_843,
    "generation_config.json": 187,
    "tokenizer_config.json": 5_120,
    "special_tokens_map.json": 414,
    "README.md": 8_200,
    "adapters/.keep": 0,
}


@dataclass(frozen=True, slots=True)
class DemoOutcome:
    result: SyncResult
    mismatched: list[str]


async def run_demo(dest: Path, *, observer: events.Observer = events.ignore) -> DemoOutcome:
    # The emulator accepts any credentials; set dummy ones only where none are configured.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "demo")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "demo")
    with tempfile.TemporaryDirectory(prefix="mirror-demo-source-") as source:
        root = Path(source)
        version_dir = await anyio.to_thread.run_sync(lambda: write_synthetic(root, NAME, VERSION, FILES, seed=7))
        async with Emulator(EmulatorSettings(root=root, part_size=PART_SIZE)) as emulator:
            settings = SyncSettings(name=NAME, dest=dest, page_size=4,
                                    aws=AwsSettings(region="us-east-1", endpoint_url=emulator.endpoint))
            result = await sync(settings, observer=observer)
        mismatched = await anyio.to_thread.run_sync(_compare, version_dir, result.dest)
    return DemoOutcome(result, mismatched)


def _compare(source: Path, dest: Path) -> list[str]:
    return [name for name in FILES if _sha256(source / name) != _sha256(dest / name)]


def _sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
