"""Presigned S3 URLs: when they expire, and how to show them without their secrets.

The expiry is read from the URL itself (`X-Amz-Date` + `X-Amz-Expires`); nothing assumes
15 minutes. Expiry is turned into a monotonic deadline when the URL is received, so a wall
clock that jumps, or one that disagrees with the service's, cannot stretch a URL's life.
"""

from __future__ import annotations

import calendar
import ipaddress
import re
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from .errors import UnsafeUrl

_SECRET_IN_TEXT = re.compile(
    r"(X-Amz-(?:Signature|Credential|Security-Token))=([^&\s\"'<>]*)", re.IGNORECASE
)
_AMZ_DATE = re.compile(r"\d{8}T\d{6}Z")
# only the two parameters expiry needs: parsing the whole query per URL costs a listing time
_EXPIRY_PARAMS = re.compile(r"(?:^|&)(X-Amz-Date|X-Amz-Expires)=([^&]*)")


@dataclass(frozen=True, slots=True)
class PresignedUrl:
    """One presigned GET, with the monotonic instant after which it must not be used."""

    url: str
    deadline: float  # time.monotonic() value
    lifetime: float  # seconds the URL was valid for when issued (X-Amz-Expires)

    def remaining(self, now: float | None = None) -> float:
        return self.deadline - (time.monotonic() if now is None else now)

    def __repr__(self) -> str:  # never let a signature reach a log through repr()
        return f"PresignedUrl({scrub(self.url)!r}, remaining={self.remaining():.0f}s)"


def parse(url: str, *, wall_now: float | None = None, mono_now: float | None = None) -> PresignedUrl:
    """Read a presigned URL's expiry.

    Remaining life is `X-Amz-Date + X-Amz-Expires - now`, clamped to `[0, X-Amz-Expires]`:
    a local clock behind the service's never grants more than the URL's stated lifetime.
    URLs without SigV4 query auth (plain public objects) get an effectively endless life.
    """
    wall_now = time.time() if wall_now is None else wall_now
    mono_now = time.monotonic() if mono_now is None else mono_now
    query = dict(_EXPIRY_PARAMS.findall(url.partition("?")[2].partition("#")[0]))
    if "X-Amz-Expires" not in query or "X-Amz-Date" not in query:
        return PresignedUrl(url, mono_now + 365 * 86400.0, float("inf"))
    lifetime = float(int(query["X-Amz-Expires"]))
    expires_at = _amz_date(query["X-Amz-Date"]) + lifetime
    remaining = min(max(expires_at - wall_now, 0.0), lifetime)
    return PresignedUrl(url, mono_now + remaining, lifetime)


def _amz_date(text: str) -> float:
    """`YYYYMMDDTHHMMSSZ` as a Unix time (parsed by hand: strptime is slow per URL)."""
    if not _AMZ_DATE.fullmatch(text):
        raise ValueError(f"X-Amz-Date {text!r} is not YYYYMMDDTHHMMSSZ")
    return calendar.timegm((int(text[0:4]), int(text[4:6]), int(text[6:8]),
                            int(text[9:11]), int(text[11:13]), int(text[13:15]), 0, 0, 0))


def check_url(url: str, *, allow_http: bool = False, allow_hosts: tuple[str, ...] = ()) -> None:
    """Refuse an object URL outside the policy, with `UnsafeUrl` saying why.

    Policy: https to an S3 endpoint (a host under amazonaws.com or amazonaws.com.cn with an
    `s3` label: buckets, regional, dual-stack, FIPS, accelerate and VPC-endpoint forms). Plain
    http is accepted only for loopback hosts (the emulator), or anywhere with --allow-http.
    Other hosts only when named with --allow-host. Different hosts within a listing are fine
    as long as each passes: content may span buckets.
    """
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
    except ValueError:
        raise UnsafeUrl("refused an object URL that does not parse") from None
    loopback = _is_loopback(host)
    if parts.scheme not in ("https", "http") or not host:
        raise UnsafeUrl(f"refused object URL {describe(url)!r}: not an http(s) URL with a host")
    if parts.scheme == "http" and not (loopback or allow_http):
        raise UnsafeUrl(f"refused object URL to {host}: plain http (add --allow-http to accept it)")
    if not (loopback or host in allow_hosts or _is_s3_host(host)):
        raise UnsafeUrl(f"refused object URL to {host}: not an S3 endpoint (add --allow-host {host} to accept it)")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_s3_host(host: str) -> bool:
    if not (host.endswith(".amazonaws.com") or host.endswith(".amazonaws.com.cn")):
        return False
    return any(label == "s3" or label.startswith("s3-") for label in host.split("."))


def scrub(text: str) -> str:
    """Replace every signature, credential and token value found anywhere in `text` (a URL,
    a message, a log line), so it is safe to show."""
    return _SECRET_IN_TEXT.sub(r"\1=REDACTED", text)


def describe(url: str) -> str:
    """A short, secret-free name for a URL in messages: host and path only."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"
