"""Operating it: jobs, versions, ls, dry runs, filters, JSON, metrics, shards, limits, proxies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import aiohttp
import anyio
import pytest
from aiohttp import web

import mirror
from mirror import sync
from mirror.config import AwsSettings, SyncSettings, format_size
from mirror.errors import ExitCode
from tests.conftest import SMALL_MODEL, settings_for, stats, tree
from tests.integration.test_cli import _env, emulator_process, run_cli

SAFETENSORS = {n for n in SMALL_MODEL if n.endswith(".safetensors")}


@pytest.fixture(scope="module")
def endpoint(content_root: Path):
    with emulator_process(content_root, "--part-size", "1MiB") as url:
        yield url


def sync_cli(endpoint: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mirror", "sync", *args, "--endpoint-url", endpoint],
                          env=env or _env(), capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_jobs_in_a_config_file_run_all_or_one(endpoint, content_root, tmp_path):
    config = tmp_path / "mirror.toml"
    config.write_text(f'concurrency = 4\nendpoint_url = "{endpoint}"\n\n'
                      f'[jobs.weights]\nname = "small-model"\nversion = "1.0.0"\ndest = "{tmp_path / "w"}"\n'
                      f'include = ["*.safetensors"]\n\n'
                      f'[jobs.newest]\nname = "small-model"\ndest = "{tmp_path / "n"}"\n')
    both = run_cli("sync", "--config", str(config))
    assert both.returncode == 0, both.stderr
    assert set(tree(tmp_path / "w")) == SAFETENSORS
    assert tree(tmp_path / "n") == tree(content_root / "small-model" / "1.1.0")
    assert "job newest: mirrored 2 files of 1.1.0" in both.stdout
    one = run_cli("sync", "--config", str(config), "--job", "weights", "--dest", str(tmp_path / "w2"))
    assert one.returncode == 0 and set(tree(tmp_path / "w2")) == SAFETENSORS and not (tmp_path / "w3").exists()


@pytest.mark.parametrize("body, message", [
    ('[jobs.a]\nname = "m"\ndest = "/d"\nconcurency = 4\n', ":4: unknown key 'concurency'"),
    ('concurrency = 4\n\n[jobs.a]\nname = "m"\ndest = "/d"\npage_size = 500\n', ":6: page_size: 500 is outside"),
    ('shard = "7/4"\n[jobs.a]\nname = "m"\ndest = "/d"\n', ":1: shard index"),
])
def test_config_errors_name_the_key_and_the_line(tmp_path, capsys, body, message):
    config = tmp_path / "bad.toml"
    config.write_text(body)
    assert mirror.cli.main(["sync", "--config", str(config)]) == ExitCode.USAGE
    assert message in capsys.readouterr().err


def test_latest_is_resolved_and_recorded(endpoint, content_root, tmp_path):
    done = sync_cli(endpoint, "small-model", "--dest", str(tmp_path / "out"))
    assert done.returncode == 0 and "of 1.1.0" in done.stdout
    manifest = json.loads((tmp_path / "out/.mirror/manifest.json").read_text())
    assert manifest["content"]["version"] == "1.1.0"


@pytest.mark.anyio
async def test_without_permission_to_list_versions_the_service_picks_latest(emulator_factory, content_root, tmp_path):
    async with emulator_factory(denied_operations=("ListHubContentVersions",)) as emulator:
        result = await sync(settings_for(emulator, tmp_path / "out", version=None))
    assert result.ok and result.version is None
    assert tree(tmp_path / "out") == tree(content_root / "small-model" / "1.1.0")


def test_ls_lists_files_and_sizes_without_downloading(endpoint, content_root):
    before = json.load(__import__("urllib.request").request.urlopen(f"{endpoint}/_emulator/stats"))
    done = run_cli("ls", "small-model", "--version", "1.0.0", "--sizes", "--json", "--endpoint-url", endpoint)
    after = json.load(__import__("urllib.request").request.urlopen(f"{endpoint}/_emulator/stats"))
    assert done.returncode == 0, done.stderr
    listing = json.loads(done.stdout)
    assert {f["path"]: f["size"] for f in listing["files"]} == SMALL_MODEL
    assert after["bytes_served"] - before["bytes_served"] <= len(SMALL_MODEL)  # one byte a probe at most
    plain = run_cli("ls", "small-model", "--include", "*.safetensors", "--endpoint-url", endpoint)
    assert plain.returncode == 0 and "1.1.0" in plain.stderr and plain.stdout.strip() == ""  # 1.1.0 has none


def test_dry_run_says_what_would_happen_and_changes_nothing(endpoint, content_root, tmp_path):
    dest = tmp_path / "out"
    fresh = sync_cli(endpoint, "small-model", "--version", "1.0.0", "--dest", str(dest), "--dry-run")
    assert fresh.returncode == 0, fresh.stderr
    assert f"dry run: {len(SMALL_MODEL)} to fetch" in fresh.stdout and not dest.exists()
    assert sync_cli(endpoint, "small-model", "--version", "1.0.0", "--dest", str(dest)).returncode == 0
    (dest / "stale.bin").write_bytes(b"old")
    again = sync_cli(endpoint, "small-model", "--version", "1.0.0", "--dest", str(dest), "--dry-run", "--delete")
    assert "delete   stale.bin" in again.stdout and f"{len(SMALL_MODEL)} to skip" in again.stdout
    assert (dest / "stale.bin").exists()


@pytest.mark.parametrize("flags, expected", [
    (["--include", "*.safetensors", "--include", "config.json"], SAFETENSORS | {"config.json"}),
    (["--exclude", "weights/", "--exclude", "*.txt"], set(SMALL_MODEL) - SAFETENSORS - {"empty.txt", "nested/deeper/vocab.txt"}),
    (["--include", "/nested/**"], {"nested/deeper/vocab.txt"}),
])
def test_filters_are_exact(endpoint, tmp_path, flags, expected):
    done = sync_cli(endpoint, "small-model", "--version", "1.0.0", "--dest", str(tmp_path / "out"), *flags)
    assert done.returncode == 0, done.stderr
    assert set(tree(tmp_path / "out")) == expected


def test_json_output_is_one_object_per_line_and_ends_with_a_summary(endpoint, tmp_path):
    metrics = tmp_path / "mirror.prom"
    done = sync_cli(endpoint, "small-model", "--version", "1.0.0", "--dest", str(tmp_path / "out"), "--json",
                    "--metrics-file", str(metrics))
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    kinds = {r["event"] for r in records}
    assert {"page_listed", "file_started", "file_finished", "summary"} <= kinds
    summary = records[-1]
    assert summary["event"] == "summary" and summary["ok"] and summary["fetched"] == len(SMALL_MODEL)
    assert summary["verified"] == len(SMALL_MODEL) and summary["exit_code"] == 0
    assert sum(1 for r in records if r["event"] == "file_finished") == len(SMALL_MODEL)
    text = metrics.read_text()
    assert 'mirror_last_run_success{content="small-model",job="small-model"} 1' in text
    assert f'outcome="fetched"}} {len(SMALL_MODEL)}' in text


def test_quiet_prints_nothing_and_verbose_prints_what_happened(endpoint, tmp_path):
    quiet = sync_cli(endpoint, "small-model", "--dest", str(tmp_path / "q"), "-q")
    assert quiet.returncode == 0 and quiet.stdout == "" and quiet.stderr == ""
    verbose = sync_cli(endpoint, "small-model", "--dest", str(tmp_path / "v"), "-v")
    assert "done weights.bin (md5)" in verbose.stderr and "listed page 0" in verbose.stderr


def test_shards_together_equal_the_whole_with_no_overlap(endpoint, content_root, tmp_path):
    dest = tmp_path / "shared"
    processes = [subprocess.Popen([sys.executable, "-m", "mirror", "sync", "small-model", "--version", "1.0.0",
                                   "--dest", str(dest), "--endpoint-url", endpoint, "--shard-count", "3"],
                                  env={**_env(), "JOB_COMPLETION_INDEX": str(k)}, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for k in range(3)]
    for process in processes:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
    manifests = [json.loads((dest / f".mirror/manifest.shard-{k}-of-3.json").read_text())["files"] for k in range(3)]
    owned = [set(m) for m in manifests]
    assert sum(map(len, owned)) == len(SMALL_MODEL) == len(set().union(*owned))
    assert tree(dest) == tree(content_root / "small-model" / "1.0.0")
    assert run_cli("verify", str(dest)).returncode == 0
    assert sync_cli(endpoint, "small-model", "--dest", str(dest), "--shard", "0/3", "--delete").returncode == \
        ExitCode.USAGE


@pytest.mark.anyio
async def test_connection_limits_hold(emulator_factory, content_root, tmp_path):
    async with emulator_factory(conn_rate=1024 * 1024) as emulator:
        capped = await sync(settings_for(emulator, tmp_path / "a", per_host_connections=2, chunk_size=256 * 1024))
        counters = await stats(emulator.endpoint)
        throttled = await sync(settings_for(emulator, tmp_path / "b", max_bandwidth=8 * 1024 * 1024))
    assert capped.ok and counters["max_in_flight"] == 2
    assert throttled.ok and tree(tmp_path / "b") == tree(content_root / "small-model" / "1.0.0")


def test_limits_given_as_flags_hold(content_root, tmp_path):
    with emulator_process(content_root, "--part-size", "1MiB", "--conn-rate", "1MiB") as slow_endpoint:
        done = sync_cli(slow_endpoint, "small-model", "--version", "1.0.0", "--dest", str(tmp_path / "out"),
                        "--per-host-connections", "3", "--chunk-size", "256KiB", "--max-bandwidth", "8MiB/s")
        counters = json.load(__import__("urllib.request").request.urlopen(f"{slow_endpoint}/_emulator/stats"))
    assert done.returncode == 0, done.stderr
    assert counters["max_in_flight"] == 3
    assert tree(tmp_path / "out") == tree(content_root / "small-model" / "1.0.0")


def test_prewarm_reports_what_it_read_into_the_cache(endpoint, tmp_path):
    done = sync_cli(endpoint, "small-model", "--version", "1.0.0", "--dest", str(tmp_path / "out"), "--prewarm")
    expected = format_size(sum(SMALL_MODEL.values()))
    assert done.returncode == 0 and f"prewarmed {expected} into the page cache" in done.stdout


def test_the_python_api_returns_a_result_object(endpoint, content_root, tmp_path):
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "x")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "x")
    settings = SyncSettings(name="small-model", version="1.0.0", dest=tmp_path / "api",
                            aws=AwsSettings(endpoint_url=endpoint))
    result = mirror.sync_blocking(settings)
    assert result.ok and set(result.verified) == set(SMALL_MODEL) and not result.skipped
    assert result.bytes_downloaded == sum(SMALL_MODEL.values())
    assert set(mirror.sync_blocking(settings).skipped) == set(SMALL_MODEL)


class ForwardProxy:
    """A plain HTTP forward proxy on loopback that counts what it relays."""

    def __init__(self) -> None:
        self.relayed: list[str] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.relayed.append(f"{request.method} {request.url.host}")
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            async with session.request(request.method, request.url, headers=request.headers,
                                       data=await request.read(), allow_redirects=False) as upstream:
                body = await upstream.read()
                headers = {k: v for k, v in upstream.headers.items()
                           if k.lower() not in ("transfer-encoding", "content-encoding", "connection")}
                return web.Response(status=upstream.status, body=body, headers=headers)

    def serve(self, ready: threading.Event, port: list[int], stop: threading.Event) -> None:
        async def main() -> None:
            runner = web.AppRunner(web.Application(handler_args={}, middlewares=[]), access_log=None)
            runner.app.router.add_route("*", "/{tail:.*}", self.handle)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port.append(site._server.sockets[0].getsockname()[1])
            ready.set()
            while not stop.is_set():
                await anyio.sleep(0.05)
            await runner.cleanup()
        anyio.run(main)


def test_downloads_and_api_calls_go_through_an_http_proxy(endpoint, content_root, tmp_path):
    proxy, ready, stop, port = ForwardProxy(), threading.Event(), threading.Event(), []
    thread = threading.Thread(target=proxy.serve, args=(ready, port, stop), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        env = {**_env(), "HTTP_PROXY": f"http://127.0.0.1:{port[0]}", "NO_PROXY": ""}
        done = sync_cli(endpoint, "small-model", "--version", "1.0.0", "--dest", str(tmp_path / "out"), env=env)
        bypass = sync_cli(endpoint, "small-model", "--version", "1.0.0", "--dest", str(tmp_path / "direct"),
                          env={**env, "NO_PROXY": "127.0.0.1"})
    finally:
        stop.set()
        thread.join(10)
    assert done.returncode == 0, done.stderr
    assert tree(tmp_path / "out") == tree(content_root / "small-model" / "1.0.0")
    relayed_gets = [r for r in proxy.relayed if r.startswith("GET")]
    assert len(relayed_gets) >= len(SMALL_MODEL) and any(r.startswith("POST") for r in proxy.relayed)
    assert bypass.returncode == 0 and len(proxy.relayed) == len(relayed_gets) + sum(
        r.startswith("POST") for r in proxy.relayed)  # the bypassed run added nothing


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                           "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                           "-keyout", str(key), "-out", str(cert)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"openssl could not make a certificate: {made.stderr.decode()[-200:]}")
    return cert, key


def test_a_private_ca_is_trusted_only_when_given(content_root, tmp_path, self_signed):
    cert, key = self_signed
    with emulator_process(content_root, "--tls-cert", str(cert), "--tls-key", str(key)) as tls_endpoint:
        assert tls_endpoint.startswith("https://")
        untrusted = sync_cli(tls_endpoint, "small-model", "--version", "1.0.0", "--dest", str(tmp_path / "no"),
                             "--api-attempts", "1")
        flagged = sync_cli(tls_endpoint, "small-model", "--version", "1.0.0", "--dest", str(tmp_path / "flag"),
                           "--ca-bundle", str(cert))
        from_env = sync_cli(tls_endpoint, "small-model", "--version", "1.0.0", "--dest", str(tmp_path / "env"),
                            env={**_env(), "AWS_CA_BUNDLE": str(cert)})
    assert untrusted.returncode == ExitCode.HUB_ERROR and "certificate" in untrusted.stderr.lower()
    for run, dest in ((flagged, "flag"), (from_env, "env")):
        assert run.returncode == 0, run.stderr
        assert tree(tmp_path / dest) == tree(content_root / "small-model" / "1.0.0")
