import email.utils
import time

import pytest

from understudy.gateway.teacher.client import clamp_retry_after, passed_headers


@pytest.mark.parametrize(
    ("value", "expected"),
    [("2", "2"), ("999999999999", "600"), ("-5", "0"), ("1.5", "1"), ("nan", None), ("x", None)],
)
def test_retry_after_seconds_are_clamped(value, expected):
    assert clamp_retry_after(value) == expected


def test_retry_after_as_a_date_becomes_seconds_within_the_cap():
    soon = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= int(clamp_retry_after(soon) or -1) <= 30
    far = email.utils.formatdate(time.time() + 10**8, usegmt=True)
    assert clamp_retry_after(far) == "600"


def test_passed_headers_clamp_both_retry_after_headers_and_drop_garbage():
    got = passed_headers(
        {
            "Retry-After": "999999999999",
            "retry-after-ms": "999999999999",
            "x-ratelimit-remaining-requests": "0",
            "set-cookie": "a=b",
        }
    )
    assert got == {
        "Retry-After": "600",
        "retry-after-ms": "600000",
        "x-ratelimit-remaining-requests": "0",
    }
    assert passed_headers({"retry-after": "soon"}) == {}
