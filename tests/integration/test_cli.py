"""The `mirror` command as users run it: real processes, the emulator in its own process."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from mirror.cli import main
from mirror.errors import ExitCode
from tests.conftest import SMALL_MODEL, tree


def _env() -> dict[str, str]:
    """Dummy credentials and no region: with --endpoint-url the mirror needs none."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HTTP", "http"))}
    env.update(AWS_ACCESS_KEY_ID="AKIATESTEXAMPLE", AWS_SECRET_ACCESS_KEY="test-secret",
               AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    return env


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mirror", *args], env=_env(), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


@contextlib.contextmanager
def emulator_process(root: Path, *flags: str) -> Iterator[str]:
    """`mirror emulator` in its own process; yields the endpoint from its first line."""
    process = subprocess.Popen([sys.executable, "-m", "mirror", "emulator", "--root", str(root), *flags],
                               env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        first_line = process.stdout.readline().strip()
        assert first_line.startswith(("endpoint http://127.0.0.1:", "endpoint https://127.0.0.1:")), first_line
        yield first_line.split()[1]
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0  # SIGTERM is a clean stop


@pytest.fixture(scope="module")
def endpoint(content_root: Path) -> Iterator[str]:
    with emulator_process(content_root, "--part-size", "1MiB") as url:
        yield url


def api_calls(endpoint: str) -> dict[str, int]:
    with urllib.request.urlopen(f"{endpoint}/_emulator/stats", timeout=10) as response:
        return json.load(response)["api_calls"]


def test_sync_reproduces_the_emulators_content_byte_for_byte(endpoint, content_root, tmp_path):
    done = run_cli("sync", "small-model", "--dest", str(tmp_path / "out"), "--endpoint-url", endpoint,
                   "--version", "1.0.0", "--page-size", "3", "--chunk-size", "512KiB")
    assert done.returncode == 0, done.stderr
    assert tree(tmp_path / "out") == tree(content_root / "small-model" / "1.0.0")
    assert done.stdout.startswith(f"mirrored {len(SMALL_MODEL)} files")
    assert "X-Amz-Signature" not in done.stdout + done.stderr


def test_config_file_supplies_the_job_and_flags_override_it(endpoint, content_root, tmp_path):
    config = tmp_path / "mirror.toml"
    config.write_text(f'name = "small-model"\nversion = "1.0.0"\ndest = "{tmp_path / "wrong"}"\n'
                      f'endpoint_url = "{endpoint}"\nconcurrency = 4\nchunk_size = "256KiB"\n')
    done = run_cli("sync", "--config", str(config), "--dest", str(tmp_path / "right"), "--version", "1.1.0")
    assert done.returncode == 0, done.stderr
    assert tree(tmp_path / "right") == tree(content_root / "small-model" / "1.1.0")
    assert not (tmp_path / "wrong").exists()


@pytest.mark.parametrize("args, code, message", [
    (["no-such-model"], ExitCode.NOT_FOUND, "does not exist"),
    (["small-model", "--version", "9.9.9"], ExitCode.NOT_FOUND, "9.9.9"),
    (["gated-model"], ExitCode.EULA_REQUIRED, "--accept-eula"),
    (["small-model", "--hub", "my-private-hub"], ExitCode.NOT_FOUND, "my-private-hub"),
])
def test_hub_errors_have_their_own_exit_codes(endpoint, tmp_path, args, code, message):
    done = run_cli("sync", *args, "--dest", str(tmp_path), "--endpoint-url", endpoint)
    assert done.returncode == code, done.stderr
    assert message in done.stderr and done.stderr.count("\n") == 1


def test_gated_content_with_the_eula_accepted(endpoint, tmp_path):
    done = run_cli("sync", "gated-model", "--accept-eula", "--dest", str(tmp_path), "--endpoint-url", endpoint)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "weights.bin").stat().st_size == 10_000


@pytest.mark.parametrize("args, message", [
    (["sync", "small-model"], "dest: required"),
    (["sync", "--dest", "x"], "name: required"),
    (["sync", "bad_name!", "--dest", "x"], "name"),
    (["sync", "m", "--dest", "x", "--version", "1.0"], "version"),
    (["sync", "m", "--dest", "x", "--type", "Dataset"], "type"),
    (["sync", "m", "--dest", "x", "--hub", "no spaces"], "hub"),
    (["sync", "m", "--dest", "x", "--page-size", "101"], "page_size"),
    (["sync", "m", "--dest", "x", "--page-size", "0"], "page_size"),
    (["sync", "m", "--dest", "x", "--concurrency", "0"], "concurrency"),
    (["sync", "m", "--dest", "x", "--concurrency", "many"], "invalid int"),
    (["sync", "m", "--dest", "x", "--chunk-size", "8 parsecs"], "chunk_size"),
    (["sync", "m", "--dest", "x", "--chunk-size", "1KiB"], "chunk_size"),
    (["sync", "m", "--dest", "x", "--expected-s3-url", "ftp://b/p"], "expected_s3_url"),
    (["sync", "m", "--dest", "x", "--refresh-margin", "-5"], "refresh_margin"),
    (["sync", "m", "--dest", "x", "--retries", "-1"], "retries"),
    (["sync", "m", "--dest", "x", "--config", "/nonexistent.toml"], "cannot read"),
    (["sync", "m", "--dest", "x", "--bogus"], "unrecognized arguments"),
    (["studio-url", "--domain-id", "d-abc", "--user-profile", "u", "--expires-in", "301"], "expires_in"),
    (["studio-url", "--domain-id", "d-abc", "--user-profile", "u", "--expires-in", "4"], "expires_in"),
    (["studio-url", "--domain-id", "d-abc", "--user-profile", "u", "--session-expiration", "43201"],
     "session_expiration"),
    (["studio-url", "--domain-id", "abc", "--user-profile", "u"], "domain_id"),
    (["studio-url", "--domain-id", "d-abc"], "--user-profile"),
    (["emulator", "--root", ".", "--fault", "meteor=1"], "unknown fault"),
    (["frobnicate"], "invalid choice"),
])
def test_usage_errors_exit_2_with_one_line_before_any_call(endpoint, capsys, args, message):
    before = api_calls(endpoint)
    code = main([*args, "--endpoint-url", endpoint] if args[0] in ("sync", "studio-url") else args)
    err = capsys.readouterr().err
    assert code == ExitCode.USAGE
    assert message in err and err.count("\n") == 1, err
    assert api_calls(endpoint) == before


def test_verify_exits_0_when_all_match_and_10_when_not(endpoint, tmp_path):
    dest = tmp_path / "out"
    assert run_cli("sync", "small-model", "--version", "1.0.0", "--dest", str(dest),
                   "--endpoint-url", endpoint).returncode == 0
    clean = run_cli("verify", str(dest))
    assert clean.returncode == 0 and clean.stdout == f"verified {len(SMALL_MODEL)} files: all match the manifest\n"
    (dest / "config.json").write_bytes(b"tampered")
    (dest / "weights/model-00002.safetensors").unlink()
    dirty = run_cli("verify", str(dest))
    assert dirty.returncode == ExitCode.VERIFY_FAILED
    assert "missing weights/model-00002.safetensors" in dirty.stdout
    assert "differs config.json: size is 8" in dirty.stdout


def test_verify_without_a_manifest_is_a_usage_error(tmp_path):
    done = run_cli("verify", str(tmp_path))
    assert done.returncode == ExitCode.USAGE and "no manifest" in done.stderr


def test_studio_url_prints_the_authorized_url(endpoint):
    done = run_cli("studio-url", "--domain-id", "d-emulator0000", "--user-profile", "default-user",
                   "--expires-in", "60", "--endpoint-url", endpoint)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("https://d-emulator0000.studio.") and "expires=60" in done.stdout


def test_studio_url_for_an_unknown_profile_is_not_found(endpoint):
    done = run_cli("studio-url", "--domain-id", "d-emulator0000", "--user-profile", "nobody",
                   "--endpoint-url", endpoint)
    assert done.returncode == ExitCode.NOT_FOUND
    assert "nobody does not exist" in done.stderr and done.stdout == ""


def test_demo_mirrors_and_checks_its_content(tmp_path):
    done = run_cli("demo", "--dest", str(tmp_path / "demo"), timeout=300)
    assert done.returncode == 0, done.stderr
    assert "all identical" in done.stdout
    assert (tmp_path / "demo" / "model-00001-of-00002.safetensors").stat().st_size == 150 * 1024 * 1024
