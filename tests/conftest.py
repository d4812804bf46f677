"""Shared fixtures: a real emulator on a free loopback port, real AWS-style credentials."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest

from mirror.config import AwsSettings, SyncSettings
from mirror.emulator import Emulator, EmulatorSettings, write_synthetic

# A small model with the shapes that matter: several pages, a multipart file, a zero-byte
# file, nested folders, and names that need percent-encoding in a URL.
SMALL_MODEL = {
    "config.json": 1_234,
    "weights/model-00001.safetensors": 3 * 1024 * 1024 + 17,  # multipart at part_size 1 MiB
    "weights/model-00002.safetensors": 700_000,
    "tokenizer.json": 65_536,
    "empty.txt": 0,
    "docs/read me+notes.md": 4_321,
    "nested/deeper/vocab.txt": 99_999,
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # aiohttp and aiobotocore run only on asyncio


@pytest.fixture(autouse=True)
def aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Dummy credentials, and no user AWS config leaking into tests."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
                 "AWS_ENDPOINT_URL_SAGEMAKER", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATESTEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(scope="session")
def content_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("content")
    write_synthetic(root, "small-model", "1.0.0", SMALL_MODEL, seed=1)
    write_synthetic(root, "small-model", "1.1.0", {"config.json": 99, "weights.bin": 2048}, seed=2)
    write_synthetic(root, "gated-model", "2.0.0", {"weights.bin": 10_000}, seed=3, gated=True)
    write_synthetic(root, "slow-model", "1.0.0", {"big.bin": 768 * 1024}, seed=4)
    return root


@pytest.fixture
def emulator_factory(content_root: Path):
    @asynccontextmanager
    async def start(**knobs: Any) -> AsyncIterator[Emulator]:
        knobs.setdefault("part_size", 1024 * 1024)
        async with Emulator(EmulatorSettings(root=knobs.pop("root", content_root), **knobs)) as emulator:
            yield emulator

    return start


def settings_for(emulator: Emulator, dest: Path, **changes: Any) -> SyncSettings:
    values: dict[str, Any] = {"name": "small-model", "version": "1.0.0", "dest": dest,
                              "aws": AwsSettings(region="us-east-1", endpoint_url=emulator.endpoint,
                                                 api_attempts=2)}
    values.update(changes)
    return SyncSettings(**values)


async def stats(endpoint: str) -> dict[str, Any]:
    """The emulator's counters, read over HTTP like any client would."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{endpoint}/_emulator/stats") as response:
            return await response.json()


def tree(root: Path) -> dict[str, bytes]:
    """Every regular file below `root` (relative POSIX path -> bytes), skipping .mirror/."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".mirror" not in p.relative_to(root).parts}
