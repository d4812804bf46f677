"""SigV4 presigned object URLs, made and checked with botocore's own S3 query signer."""

from __future__ import annotations

import datetime as dt
from urllib.parse import parse_qsl, urlsplit

from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

REGION = "us-east-1"
_CREDENTIALS = Credentials("AKIAEMULATOREXAMPLE", "emulator-secret-key", "emulator-session-token")
_REQUIRED = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
             "X-Amz-SignedHeaders", "X-Amz-Signature")


class S3Refusal(Exception):
    """An S3-style error: HTTP status, `<Code>`, `<Message>` and any extra headers."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def presign(url: str, expires_in: int) -> str:
    """Sign a GET of `url` (already percent-encoded) valid for `expires_in` seconds."""
    request = AWSRequest(method="GET", url=url, headers={})
    S3SigV4QueryAuth(_CREDENTIALS, "s3", REGION, expires=expires_in).add_auth(request)
    return request.url


def verify(method: str, scheme: str, host: str, raw_path_qs: str, headers: dict[str, str],
           now: dt.datetime) -> None:
    """Raise `S3Refusal` unless the request carries a valid, unexpired signature."""
    path, _, query = raw_path_qs.partition("?")
    pairs = [p for p in query.split("&") if p]
    params = dict(parse_qsl(query, keep_blank_values=True))
    if any(key not in params for key in _REQUIRED):
        raise S3Refusal(403, "AccessDenied", "Query-string authentication requires the X-Amz-* parameters")
    _check_expiry(params, now)
    _check_signed_headers(params["X-Amz-SignedHeaders"], headers)
    unsigned = [p for p in pairs if not p.startswith("X-Amz-Signature=")]
    expected = _signature(method, f"{scheme}://{host}{path}?{'&'.join(unsigned)}", params)
    if expected != params["X-Amz-Signature"]:
        raise S3Refusal(403, "SignatureDoesNotMatch",
                        "The request signature we calculated does not match the signature you provided.")


def _check_expiry(params: dict[str, str], now: dt.datetime) -> None:
    try:
        issued = dt.datetime.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)
        lifetime = int(params["X-Amz-Expires"])
    except ValueError as exc:
        raise S3Refusal(403, "AuthorizationQueryParametersError", "X-Amz-Date or X-Amz-Expires is malformed") from exc
    if not 1 <= lifetime <= 604800:
        raise S3Refusal(403, "AuthorizationQueryParametersError", "X-Amz-Expires must be 1..604800")
    if now > issued + dt.timedelta(seconds=lifetime):
        raise S3Refusal(403, "AccessDenied", "Request has expired")


def _check_signed_headers(signed: str, headers: dict[str, str]) -> None:
    signed_names = set(signed.lower().split(";"))
    for name in headers:
        if name.lower().startswith("x-amz-") and name.lower() not in signed_names:
            raise S3Refusal(403, "AccessDenied", "There were headers present in the request which were not signed")


def _signature(method: str, url_without_signature: str, params: dict[str, str]) -> str:
    request = AWSRequest(method=method, url=url_without_signature, headers={})
    request.context["timestamp"] = params["X-Amz-Date"]
    auth = S3SigV4QueryAuth(_CREDENTIALS, "s3", REGION, expires=int(params["X-Amz-Expires"]))
    canonical = auth.canonical_request(request)
    return auth.signature(auth.string_to_sign(request, canonical), request)
