"""Validated, frozen settings from defaults, a TOML file and command-line flags.

Precedence: built-in defaults < `--config FILE` < flags. AWS credentials, region and
profile also come from the usual AWS environment through botocore's own chain.

Everything the SageMaker service model leaves unchecked on the client side (maximums and
patterns) is checked here, so a bad value fails before any network call.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from .errors import UsageError

# Patterns from the botocore `sagemaker` service model (botocore validates none of them).
_NAME = r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}"
HUB_NAME = re.compile(rf"(arn:[a-z0-9-\.]{{1,63}}:sagemaker:\w+(?:-\w+)+:(\d{{12}}|aws):hub\/)?{_NAME}")
CONTENT_NAME = re.compile(_NAME)
VERSION = re.compile(r"\d{1,4}\.\d{1,4}\.\d{1,4}")


def version_key(version: str) -> tuple[int, ...]:
    """Sort key of a MAJOR.MINOR.PATCH version: numeric, so 1.10.0 follows 1.9.0."""
    return tuple(int(part) for part in version.split("."))
S3_URL = re.compile(r"(https|s3)://([^/]+)/?(.*)")
DOMAIN_ID = re.compile(r"d-(-*[a-z0-9]){1,61}")
CONTENT_TYPES = ("Model", "Notebook", "ModelReference", "DataSet", "JsonDoc")

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)(b?)\s*$", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


def parse_size(text: str | int, *, key: str = "size") -> int:
    """`8MiB`, `8M` (binary), `64MB` (decimal), `1.5GiB` or plain bytes -> bytes."""
    if isinstance(text, bool):
        raise UsageError(f"{key}: expected a size such as 8MiB, got {text!r}")
    if isinstance(text, int):
        return text
    match = _SIZE.match(str(text))
    if not match:
        raise UsageError(f"{key}: expected a size such as 8MiB, 64MB or 1048576, got {text!r}")
    number, prefix, binary, byte_suffix = match.groups()
    # A bare letter (8M) is binary, like curl and aria2; "MB" is decimal, "MiB" binary.
    base = 1000 if (byte_suffix and not binary and prefix) else 1024
    return int(float(number) * base ** _POWERS[prefix.lower()])


def parse_rate(text: str | int, *, key: str = "rate") -> int:
    """`500MB/s`, `1GiB/s`, `800M` or plain bytes per second -> bytes per second."""
    value = text.removesuffix("/s") if isinstance(text, str) else text
    return parse_size(value, key=key)


def parse_shard(text: str, *, key: str = "shard") -> tuple[int, int]:
    """`K/N` (K counted from 0, as Kubernetes indexes are) -> (K, N)."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not match:
        raise UsageError(f"{key}: expected K/N such as 0/4 (K from 0 to N-1), got {text!r}")
    return int(match.group(1)), int(match.group(2))


def shard_from_environment(count: int) -> tuple[int, int]:
    """This host's shard when only the count is given: the index comes from the scheduler.

    Kubernetes Indexed Jobs set JOB_COMPLETION_INDEX (from 0); Slurm arrays set
    SLURM_ARRAY_TASK_ID, counted here from SLURM_ARRAY_TASK_MIN (default 0).
    """
    env = os.environ
    if "JOB_COMPLETION_INDEX" in env:
        index = env["JOB_COMPLETION_INDEX"]
    elif "SLURM_ARRAY_TASK_ID" in env:
        index = str(int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", "0")))
    else:
        raise UsageError("--shard-count: set JOB_COMPLETION_INDEX or SLURM_ARRAY_TASK_ID, or use --shard K/N")
    if not index.isdigit():
        raise UsageError(f"--shard-count: the shard index {index!r} from the environment is not a number")
    return int(index), count


def format_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


@dataclass(frozen=True, kw_only=True, slots=True)
class AwsSettings:
    """Where and as whom to call SageMaker; None means botocore's own default chain."""

    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None
    api_attempts: int = 8  # botocore "standard" retries: throttling and transient API errors
    api_timeout: float = 60.0  # seconds to wait for an API answer before retrying
    ca_bundle: str | None = None  # PEM file of CAs to trust (TLS-inspecting proxies); or AWS_CA_BUNDLE

    def __post_init__(self) -> None:
        _check_range("api_attempts", self.api_attempts, 1, 20)
        _check_range("api_timeout", self.api_timeout, 1, 600)


@dataclass(frozen=True, kw_only=True, slots=True)
class SyncSettings:
    """One mirror job. Defaults live here and nowhere else."""

    name: str
    dest: Path
    hub: str = "SageMakerPublicHub"
    content_type: str = "Model"
    version: str | None = None  # None: the service's latest
    accept_eula: bool = False
    expected_s3_url: str | None = None
    concurrency: int = 16  # simultaneous HTTP requests
    chunk_size: int = 8 * MiB  # bytes per ranged GET
    page_size: int = 100  # MaxResults per CreateHubContentPresignedUrls page
    refresh_margin: float = 60.0  # renew a URL with less life left than this; 0 = only on 403
    retries: int = 8  # attempts per chunk on transient errors
    require_verified: bool = False  # fail files that nothing can verify (e.g. SSE-KMS ETags)
    delete: bool = False  # remove files under DEST that the content no longer lists
    allow_http: bool = False  # accept plain-http object URLs to hosts other than loopback
    allow_hosts: tuple[str, ...] = ()  # object URL hosts accepted besides S3 endpoints and loopback
    include: tuple[str, ...] = ()  # globs: keep only matching files (see plan.PathFilter)
    exclude: tuple[str, ...] = ()  # globs: drop matching files
    max_bandwidth: int | None = None  # bytes/s over all connections; None = unlimited
    per_host_connections: int | None = None  # connections to one host at once; None = no extra limit
    shard: tuple[int, int] | None = None  # (K, N): this run takes the files of shard K of N
    prewarm: bool = False  # read finished files into the page cache before exiting
    dry_run: bool = False  # list what would be fetched, skipped and deleted; change nothing
    aws: AwsSettings = field(default_factory=AwsSettings)

    def __post_init__(self) -> None:
        _check_pattern("name", self.name, CONTENT_NAME, "1-63 letters, digits and hyphens")
        _check_pattern("hub", self.hub, HUB_NAME, "a hub name or hub ARN")
        _check_choice("type", self.content_type, CONTENT_TYPES)
        if self.version is not None:
            _check_pattern("version", self.version, VERSION, "MAJOR.MINOR.PATCH, e.g. 1.2.0")
        if self.expected_s3_url is not None:
            _check_pattern("expected_s3_url", self.expected_s3_url, S3_URL, "s3://bucket/prefix or https://...")
            _check_range("expected_s3_url length", len(self.expected_s3_url), 0, 1024)
        _check_range("concurrency", self.concurrency, 1, 256)
        _check_range("chunk_size", self.chunk_size, 64 * KiB, 5 * GiB)
        _check_range("page_size", self.page_size, 1, 100)
        _check_range("refresh_margin", self.refresh_margin, 0, 3600)
        _check_range("retries", self.retries, 0, 100)
        if self.max_bandwidth is not None:
            _check_range("max_bandwidth", self.max_bandwidth, 1024, 10**12)
        if self.per_host_connections is not None:
            _check_range("per_host_connections", self.per_host_connections, 1, 256)
        if self.shard is not None:
            _check_range("shard count", self.shard[1], 1, 100_000)
            _check_range("shard index", self.shard[0], 0, self.shard[1] - 1)
            if self.delete:
                raise UsageError("delete: cannot be combined with shard: one shard does not know the "
                                 "other shards' files")


@dataclass(frozen=True, kw_only=True, slots=True)
class StudioUrlSettings:
    """Arguments of CreatePresignedDomainUrl, checked against the service model."""

    domain_id: str
    user_profile: str
    space: str | None = None
    expires_in: int | None = None  # 5-300 s, service default 300
    session_expiration: int | None = None  # 1800-43200 s, service default 43200
    landing_uri: str | None = None
    aws: AwsSettings = field(default_factory=AwsSettings)

    def __post_init__(self) -> None:
        _check_pattern("domain_id", self.domain_id, DOMAIN_ID, "d- followed by lowercase letters and digits")
        _check_pattern("user_profile", self.user_profile, CONTENT_NAME, "1-63 letters, digits and hyphens")
        if self.space is not None:
            _check_pattern("space", self.space, CONTENT_NAME, "1-63 letters, digits and hyphens")
        if self.expires_in is not None:
            _check_range("expires_in", self.expires_in, 5, 300)
        if self.session_expiration is not None:
            _check_range("session_expiration", self.session_expiration, 1800, 43200)
        if self.landing_uri is not None:
            _check_range("landing_uri length", len(self.landing_uri), 0, 1023)


def _check_pattern(key: str, value: object, pattern: re.Pattern[str], hint: str) -> None:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise UsageError(f"{key}: {value!r} is not valid; expected {hint}")


def _check_choice(key: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UsageError(f"{key}: {value!r} is not one of {', '.join(choices)}")


def _check_range(key: str, value: float, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise UsageError(f"{key}: expected a number, got {value!r}")
    if not low <= value <= high:
        raise UsageError(f"{key}: {value} is outside {low}..{high}")


# --- the config file -------------------------------------------------------------------

# TOML key -> (settings field, converter). The same names are the long flags' names.
_SYNC_KEYS: dict[str, tuple[str, Callable[[Any, str], Any]]] = {
    "name": ("name", lambda v, k: _expect(v, str, k)),
    "dest": ("dest", lambda v, k: Path(_expect(v, (str, Path), k)).expanduser()),
    "hub": ("hub", lambda v, k: _expect(v, str, k)),
    "type": ("content_type", lambda v, k: _expect(v, str, k)),
    "version": ("version", lambda v, k: _version(_expect(v, str, k))),
    "accept_eula": ("accept_eula", lambda v, k: _expect(v, bool, k)),
    "expected_s3_url": ("expected_s3_url", lambda v, k: _expect(v, str, k)),
    "concurrency": ("concurrency", lambda v, k: _expect(v, int, k)),
    "chunk_size": ("chunk_size", lambda v, k: parse_size(_expect(v, (str, int), k), key=k)),
    "page_size": ("page_size", lambda v, k: _expect(v, int, k)),
    "refresh_margin": ("refresh_margin", lambda v, k: float(_expect(v, (int, float), k))),
    "retries": ("retries", lambda v, k: _expect(v, int, k)),
    "require_verified": ("require_verified", lambda v, k: _expect(v, bool, k)),
    "delete": ("delete", lambda v, k: _expect(v, bool, k)),
    "allow_http": ("allow_http", lambda v, k: _expect(v, bool, k)),
    "allow_hosts": ("allow_hosts", lambda v, k: tuple(h.lower() for h in _strings(v, k))),
    "include": ("include", lambda v, k: _strings(v, k)),
    "exclude": ("exclude", lambda v, k: _strings(v, k)),
    "max_bandwidth": ("max_bandwidth", lambda v, k: parse_rate(_expect(v, (str, int), k), key=k)),
    "per_host_connections": ("per_host_connections", lambda v, k: _expect(v, int, k)),
    "shard": ("shard", lambda v, k: parse_shard(_expect(v, str, k), key=k)),
    "prewarm": ("prewarm", lambda v, k: _expect(v, bool, k)),
    "dry_run": ("dry_run", lambda v, k: _expect(v, bool, k)),
}
_FIELD_KEYS = {field_name: key for key, (field_name, _) in _SYNC_KEYS.items()}


def _strings(value: Any, key: str) -> tuple[str, ...]:
    return tuple(_expect(item, str, key) for item in _expect(value, (list, tuple), key))
_AWS_KEYS: dict[str, Callable[[Any, str], Any]] = {
    "region": lambda v, k: _expect(v, str, k),
    "profile": lambda v, k: _expect(v, str, k),
    "endpoint_url": lambda v, k: _expect(v, str, k),
    "api_timeout": lambda v, k: float(_expect(v, (int, float), k)),
    "api_attempts": lambda v, k: _expect(v, int, k),
    "ca_bundle": lambda v, k: _expect(v, str, k),
}


def _expect(value: Any, kind: type | tuple[type, ...], key: str) -> Any:
    if isinstance(value, bool) and kind is not bool:
        raise UsageError(f"{key}: expected {_kind_name(kind)}, got {value!r}")
    if not isinstance(value, kind):
        raise UsageError(f"{key}: expected {_kind_name(kind)}, got {value!r}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {"str": "a string", "int": "an integer", "bool": "true or false", "float": "a number",
             "list": "a list", "tuple": "a list"}
    return " or ".join(names.get(k.__name__, k.__name__) for k in kinds)


def _version(value: str) -> str | None:
    """`latest` means what omitting the version means: the service picks the newest."""
    return None if value == "latest" else value


@dataclass(frozen=True, slots=True)
class ConfigFile:
    """A parsed config: top-level keys are defaults; `[jobs.NAME]` tables are jobs."""

    path: Path
    text: str
    defaults: dict[str, Any]
    jobs: dict[str, dict[str, Any]]

    def where(self, key: str, job: str | None = None) -> str:
        """`config PATH:LINE` of a key: in the job's table when set there, else at the top."""
        lines = self.text.splitlines()
        start = 0
        if job is not None and key in self.jobs.get(job, {}):
            header = re.compile(rf"^\s*\[\s*jobs\s*\.\s*\"?{re.escape(job)}\"?\s*\]")
            start = next((i for i, line in enumerate(lines) if header.match(line)), 0)
        pattern = re.compile(rf"^\s*\"?{re.escape(key)}\"?\s*=")
        number = next((i for i in range(start, len(lines)) if pattern.match(lines[i])), start)
        return f"config {self.path}:{number + 1}"

    def job_values(self, job: str | None) -> dict[str, Any]:
        """The merged values of one job (defaults, then the job's own keys)."""
        if job is None:
            return dict(self.defaults)
        if job not in self.jobs:
            known = ", ".join(sorted(self.jobs)) or "none"
            raise UsageError(f"--job {job!r}: no such job in {self.path} (jobs: {known})")
        return {**self.defaults, **self.jobs[job]}


def read_config_file(path: Path) -> ConfigFile:
    """Parse a TOML config; unknown keys are errors that name the key, file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"config {path}: cannot read: {exc.strerror}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config {path}: {exc}") from exc
    jobs = data.pop("jobs", {})
    config = ConfigFile(path, text, data, jobs if isinstance(jobs, dict) else {})
    if not isinstance(jobs, dict) or not all(isinstance(v, dict) for v in jobs.values()):
        raise UsageError(f"{config.where('jobs')}: `jobs` must be tables, [jobs.NAME]")
    known = set(_SYNC_KEYS) | set(_AWS_KEYS)
    for job, values in [(None, data), *jobs.items()]:
        for key in values:
            if key not in known:
                raise UsageError(f"{config.where(key, job)}: unknown key {key!r}")
    return config


def build_sync_settings(flags: Mapping[str, Any], config: ConfigFile | None = None,
                        job: str | None = None) -> SyncSettings:
    """Merge a config job's values and explicitly given flags (flags win) into SyncSettings.

    `flags` holds only what the user typed, keyed like the TOML file; absent means "not
    given", which is different from a given value of None. An error in a value that came
    from the file names the file and line.
    """
    from_file = config.job_values(job) if config is not None else {}
    merged = {**from_file, **flags}
    try:
        return _settings(merged)
    except UsageError as exc:
        named = str(exc).split(":")[0].split()[0]  # messages start with the key or field name
        key = _FIELD_KEYS.get(named, named)
        if config is not None and key in from_file and key not in flags:
            raise UsageError(f"{config.where(key, job)}: {exc}") from exc
        raise


def _settings(merged: Mapping[str, Any]) -> SyncSettings:
    values: dict[str, Any] = {}
    for key, (field_name, convert) in _SYNC_KEYS.items():
        if key in merged:
            values[field_name] = convert(merged[key], key)
    for required in ("name", "dest"):
        if required not in values:
            raise UsageError(f"{required}: required (give it as an argument or in the config file)")
    values["aws"] = build_aws_settings(merged)
    return SyncSettings(**values)


def build_aws_settings(merged: Mapping[str, Any]) -> AwsSettings:
    return AwsSettings(**{key: convert(merged[key], key) for key, convert in _AWS_KEYS.items()
                          if merged.get(key) is not None})
