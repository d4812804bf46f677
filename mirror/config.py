"""Validated, frozen settings from defaults, a TOML file and command-line flags.

Precedence: built-in defaults < `--config FILE` < flags. AWS credentials, region and
profile also come from the usual AWS environment through botocore's own chain.

Everything the SageMaker service model leaves unchecked on the client side (maximums and
patterns) is checked here, so a bad value fails before any network call.
"""

from __future__ import annotations

import math
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
    "allow_hosts": ("allow_hosts", lambda v, k: tuple(_expect(h, str, k).lower() for h in _expect(v, (list, tuple), k))),
}
_AWS_KEYS: dict[str, Callable[[Any, str], Any]] = {
    "region": lambda v, k: _expect(v, str, k),
    "profile": lambda v, k: _expect(v, str, k),
    "endpoint_url": lambda v, k: _expect(v, str, k),
    "api_timeout": lambda v, k: float(_expect(v, (int, float), k)),
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


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse a TOML config; unknown keys are errors that name the key, file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"config {path}: cannot read: {exc.strerror}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config {path}: {exc}") from exc
    known = set(_SYNC_KEYS) | set(_AWS_KEYS)
    for key in data:
        if key not in known:
            raise UsageError(f"config {path}:{_line_of(text, key)}: unknown key {key!r}")
    return data


def _line_of(text: str, key: str) -> int:
    pattern = re.compile(rf"^\s*\[?\s*\"?{re.escape(key)}\"?\s*[=\]]")
    for number, line in enumerate(text.splitlines(), start=1):
        if pattern.match(line):
            return number
    return 1


def build_sync_settings(flags: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> SyncSettings:
    """Merge config values and explicitly given flags (flags win) into SyncSettings.

    `flags` holds only what the user typed, keyed like the TOML file; absent means "not
    given", which is different from a given value of None.
    """
    merged = {**(config or {}), **flags}
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
