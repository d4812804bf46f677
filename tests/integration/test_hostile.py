"""Hostile SageMaker answers are refused, nothing lands outside DEST, and no secret leaks."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from mirror import sync
from mirror.emulator.signing import _CREDENTIALS
from tests.conftest import SMALL_MODEL, settings_for, tree
from tests.integration.test_cli import _env, emulator_process, run_cli

pytestmark = pytest.mark.anyio


async def test_object_urls_off_policy_are_refused(emulator_factory, tmp_path):
    rewrites = {"/config.json": "http://downloads.example.com", "/tokenizer.json": "https://evil.example.net"}
    async with emulator_factory(url_rewrites=rewrites) as emulator:
        result = await sync(settings_for(emulator, tmp_path / "out"))
    assert set(result.refused) == {"/config.json", "/tokenizer.json"}
    assert "plain http" in result.refused["/config.json"]
    assert "not an S3 endpoint" in result.refused["/tokenizer.json"]
    assert set(result.completed) == set(SMALL_MODEL) - {"config.json", "tokenizer.json"}


async def test_allowed_hosts_and_http_are_opt_in(emulator_factory, tmp_path):
    rewrites = {"/config.json": "https://mirror-gateway.internal"}
    async with emulator_factory(url_rewrites=rewrites) as emulator:
        result = await sync(settings_for(emulator, tmp_path / "out", allow_hosts=("mirror-gateway.internal",),
                                         retries=0))
    # allowed by policy, so it was tried (and failed: nothing listens there), not refused
    assert not result.refused and "config.json" in result.failed


async def test_colliding_local_paths_keep_the_first(emulator_factory, tmp_path):
    # listed in this order: config.json, (docs) config.json/inside.md, ..., nested/deeper/vocab.txt,
    # (tokenizer) nested, (weights 1), (weights 2) config.json.part
    rewrites = {"/docs/read me+notes.md": "/config.json/inside.md",  # a file used as a folder
                "/tokenizer.json": "/nested",  # a folder used as a file
                "/weights/model-00002.safetensors": "/config.json.part"}  # another file's partial
    async with emulator_factory(url_rewrites={}, local_path_rewrites=rewrites) as emulator:
        result = await sync(settings_for(emulator, tmp_path / "out", page_size=100))
    assert set(result.refused) == set(rewrites.values())
    assert "config.json" in result.completed and "nested/deeper/vocab.txt" in result.completed


def test_no_secret_reaches_any_output(content_root, tmp_path):
    """Failing runs, refused URLs, expired URLs and retries: scan everything printed."""
    secrets = [_CREDENTIALS.access_key, _CREDENTIALS.token]
    with emulator_process(content_root, "--fault", "internal=0.5", "--fault", "expire-early=0.3",
                          "--fault", "flip=0.5", "--url-ttl", "5") as endpoint:
        runs = [run_cli("sync", "small-model", "--version", "1.0.0", "--dest", str(tmp_path / "out"),
                        "--endpoint-url", endpoint, "--retries", "1", "--chunk-size", "256KiB"),
                run_cli("sync", "small-model", "--version", "1.0.0", "--dest", str(tmp_path / "out2"),
                        "--endpoint-url", endpoint, "--retries", "0")]
    output = "".join(run.stdout + run.stderr for run in runs)
    assert any(run.returncode != 0 for run in runs)  # the premise: there were failures to report
    assert "failed" in output or "gave up" in output
    for secret in secrets:
        assert secret not in output
    assert not re.search(r"X-Amz-(Signature|Credential|Security-Token)=(?!REDACTED)", output, re.IGNORECASE)


async def test_ls_names_hostile_entries_and_lists_the_rest(emulator_factory):
    from mirror.config import AwsSettings
    from mirror.hub import ContentRef
    from mirror.plan import PathFilter
    from mirror.runner import list_content

    async with emulator_factory(local_path_rewrites={"/config.json": "/../escape.json"}) as emulator:
        listing = await list_content(ContentRef("SageMakerPublicHub", "Model", "small-model", "1.0.0", False, None),
                                     AwsSettings(endpoint_url=emulator.endpoint), PathFilter())
    assert list(listing.refused) == ["/../escape.json"]
    assert {path for path, _ in listing.files} == set(SMALL_MODEL) - {"config.json"}
