import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from mirror import presign

URL = ("https://bucket.s3.amazonaws.com/key.bin?X-Amz-Algorithm=AWS4-HMAC-SHA256"
       "&X-Amz-Credential=AKIA%2F20261121%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20261121T120000Z"
       "&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Security-Token=TOKENVALUE&X-Amz-Signature=abcdef0123")
ISSUED = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.timezone.utc).timestamp()


def test_expiry_is_read_from_the_url_not_assumed():
    url = presign.parse(URL.replace("X-Amz-Expires=900", "X-Amz-Expires=120"), wall_now=ISSUED + 20, mono_now=1000.0)
    assert url.lifetime == 120
    assert url.deadline == 1000.0 + 100


def test_a_local_clock_behind_the_service_never_extends_the_life():
    url = presign.parse(URL, wall_now=ISSUED - 3600, mono_now=0.0)
    assert url.remaining(now=0.0) == 900


def test_an_already_expired_url_has_no_life_left():
    url = presign.parse(URL, wall_now=ISSUED + 901, mono_now=50.0)
    assert url.remaining(now=50.0) == 0


def test_scrub_removes_every_secret_of_a_url_and_keeps_the_rest():
    shown = presign.scrub(URL)
    for secret in ("abcdef0123", "TOKENVALUE", "AKIA%2F2026"):
        assert secret not in shown
    assert "bucket.s3.amazonaws.com/key.bin" in shown and "X-Amz-Expires=900" in shown


def test_repr_of_a_presigned_url_hides_its_signature():
    assert "abcdef0123" not in repr(presign.parse(URL))


@given(st.text(alphabet=st.characters(blacklist_characters="&\"'<> \t\r\n\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0"), min_size=1))
def test_scrub_never_leaves_a_signature_value_in_any_text(value):
    text = f"error fetching https://h/k?X-Amz-Signature={value}&X-Amz-Security-Token={value}!"
    scrubbed = presign.scrub(text)
    assert f"X-Amz-Signature={value}" not in scrubbed
    assert "X-Amz-Signature=REDACTED" in scrubbed and "X-Amz-Security-Token=REDACTED" in scrubbed


import re

import pytest

from mirror.errors import UnsafeUrl


@pytest.mark.parametrize("url", [
    "https://jumpstart-cache-prod-us-west-2.s3.us-west-2.amazonaws.com/a/b?X-Amz-Signature=x",
    "https://bucket.s3.amazonaws.com/k", "https://s3.cn-north-1.amazonaws.com.cn/b/k",
    "https://bucket.s3-accelerate.amazonaws.com/k", "https://bucket.s3.dualstack.eu-west-1.amazonaws.com/k",
    "https://bucket.vpce-0a1b2c3d.s3.us-east-1.vpce.amazonaws.com/k",
    "http://127.0.0.1:8080/b/k", "http://localhost/b/k", "http://[::1]:9000/b/k",
])
def test_s3_and_loopback_urls_pass_the_policy(url):
    presign.check_url(url)


@pytest.mark.parametrize("url, why", [
    ("http://bucket.s3.amazonaws.com/k", "plain http"),
    ("https://evil.example.com/k", "not an S3 endpoint"),
    ("https://s3.amazonaws.com.evil.example/k", "not an S3 endpoint"),
    ("https://ec2.us-east-1.amazonaws.com/k", "not an S3 endpoint"),
    ("ftp://bucket.s3.amazonaws.com/k", "not an http(s) URL"),
    ("file:///etc/passwd", "not an http(s) URL"),
])
def test_other_urls_are_refused_with_the_reason(url, why):
    with pytest.raises(UnsafeUrl, match=re.escape(why)):
        presign.check_url(url)


def test_http_and_other_hosts_are_opt_in():
    presign.check_url("http://bucket.s3.amazonaws.com/k", allow_http=True)
    presign.check_url("https://gateway.internal/k", allow_hosts=("gateway.internal",))


@given(st.text(max_size=60))
def test_no_url_built_from_junk_passes_unless_it_is_s3_or_loopback(host):
    url = f"https://{host}/object"
    try:
        presign.check_url(url)
    except UnsafeUrl:
        return
    from urllib.parse import urlsplit
    name = (urlsplit(url).hostname or "").lower()
    assert name.endswith((".amazonaws.com", ".amazonaws.com.cn")) or name in ("localhost",) or \
        name.startswith("127.") or name == "::1"


@given(issued=st.integers(0, 4_000_000_000), expires=st.integers(1, 604800),
       noise=st.lists(st.tuples(st.sampled_from(["a", "X-Amz-Dates", "x-amz-date", "Y"]),
                                st.text(alphabet="0123456789abcZ", max_size=8)), max_size=3))
def test_expiry_is_read_exactly_whatever_else_the_query_holds(issued, expires, noise):
    stamp = dt.datetime.fromtimestamp(issued, dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    if not stamp[:4].isdigit() or len(stamp) != 16:
        return
    extra = "".join(f"&{k}={v}" for k, v in noise)
    url = f"https://b.s3.amazonaws.com/k?z=1{extra}&X-Amz-Date={stamp}&X-Amz-Expires={expires}&X-Amz-Signature=s"
    parsed = presign.parse(url, wall_now=issued + 1, mono_now=0.0)
    assert parsed.lifetime == expires
    assert parsed.deadline == max(expires - 1, 0)  # one second after issue, on a monotonic clock at 0
