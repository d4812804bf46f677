from pathlib import Path

import pytest

from mirror.config import StudioUrlSettings, SyncSettings, build_sync_settings, parse_size, read_config_file
from mirror.errors import UsageError


@pytest.mark.parametrize("text, expected", [
    ("8MiB", 8 * 1024**2), ("8M", 8 * 1024**2), ("64MB", 64_000_000), ("1.5GiB", int(1.5 * 1024**3)),
    ("1048576", 1_048_576), (4096, 4096), ("512k", 512 * 1024), ("2 GB", 2_000_000_000),
])
def test_sizes_accept_units(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "MiB", "-1", "8 parsecs", "1e9", True])
def test_bad_sizes_are_usage_errors(text):
    with pytest.raises(UsageError):
        parse_size(text)


BASE = {"name": "my-model", "dest": Path("/tmp/x")}


@pytest.mark.parametrize("changes, message", [
    ({"name": "-bad"}, "name"), ({"name": "x" * 64}, "name"), ({"name": ""}, "name"),
    ({"hub": "bad hub"}, "hub"), ({"content_type": "Dataset"}, "type"),
    ({"version": "1.0"}, "version"), ({"version": "12345.0.0"}, "version"), ({"version": "1a2b3"}, "version"),
    ({"expected_s3_url": "ftp://bucket/x"}, "expected_s3_url"),
    ({"concurrency": 0}, "concurrency"), ({"concurrency": 257}, "concurrency"),
    ({"chunk_size": 1024}, "chunk_size"), ({"page_size": 0}, "page_size"), ({"page_size": 101}, "page_size"),
    ({"refresh_margin": -1}, "refresh_margin"), ({"retries": -1}, "retries"),
])
def test_every_sync_setting_is_validated(changes, message):
    with pytest.raises(UsageError, match=message):
        SyncSettings(**{**BASE, **changes})


def test_hub_arn_is_accepted():
    settings = SyncSettings(**BASE, hub="arn:aws:sagemaker:us-west-2:123456789012:hub/my-hub")
    assert settings.hub.endswith("my-hub")


@pytest.mark.parametrize("changes, message", [
    ({"domain_id": "abc"}, "domain_id"), ({"user_profile": "-x"}, "user_profile"),
    ({"expires_in": 4}, "expires_in"), ({"expires_in": 301}, "expires_in"),
    ({"session_expiration": 1799}, "session_expiration"), ({"session_expiration": 43201}, "session_expiration"),
    ({"space": "bad space"}, "space"), ({"landing_uri": "x" * 1024}, "landing_uri"),
])
def test_every_studio_setting_is_validated(changes, message):
    with pytest.raises(UsageError, match=message):
        StudioUrlSettings(**{"domain_id": "d-abc123", "user_profile": "user", **changes})


def test_flags_override_the_config_file(tmp_path):
    config = tmp_path / "mirror.toml"
    config.write_text('name = "from-file"\ndest = "/data"\nconcurrency = 4\nchunk_size = "16MiB"\n')
    settings = build_sync_settings({"concurrency": 32}, read_config_file(config))
    assert (settings.name, settings.concurrency, settings.chunk_size) == ("from-file", 32, 16 * 1024**2)
    assert settings.dest == Path("/data")


def test_latest_means_no_version(tmp_path):
    assert build_sync_settings({**BASE, "version": "latest"}).version is None


def test_unknown_config_key_names_the_key_and_the_line(tmp_path):
    config = tmp_path / "mirror.toml"
    config.write_text('name = "m"\n\nconcurency = 4\n')
    with pytest.raises(UsageError, match=r"mirror.toml:3: unknown key 'concurency'"):
        read_config_file(config)


def test_wrong_type_in_config_is_a_usage_error(tmp_path):
    config = tmp_path / "mirror.toml"
    config.write_text('name = "m"\ndest = "/d"\nconcurrency = "many"\n')
    with pytest.raises(UsageError, match="concurrency: expected an integer"):
        build_sync_settings({}, read_config_file(config))


def test_broken_toml_is_a_usage_error(tmp_path):
    config = tmp_path / "mirror.toml"
    config.write_text("name = \n")
    with pytest.raises(UsageError, match="mirror.toml"):
        read_config_file(config)


from mirror.config import parse_rate, parse_shard, shard_from_environment


def test_rates_and_shards_parse():
    assert parse_rate("500MB/s") == 500_000_000 and parse_rate("1GiB/s") == 1024**3 and parse_rate(2048) == 2048
    assert parse_shard("2/8") == (2, 8)
    with pytest.raises(UsageError, match="K/N"):
        parse_shard("2 of 8")


def test_shard_index_comes_from_kubernetes_or_slurm(monkeypatch):
    for name in ("JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(UsageError, match="JOB_COMPLETION_INDEX"):
        shard_from_environment(4)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "5")
    assert shard_from_environment(4) == (2, 4)
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "3")
    assert shard_from_environment(4) == (3, 4)


def test_a_shard_index_out_of_range_is_refused():
    with pytest.raises(UsageError, match="shard index"):
        SyncSettings(**BASE, shard=(4, 4))
