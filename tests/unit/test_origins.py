"""The one origin parser: what it reads, what it refuses and how it writes an origin."""

from __future__ import annotations

import pytest

from gateway.http.origins import Origin, parse_origin


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://intranet.example.com", Origin("https", "intranet.example.com", 443)),
        ("HTTPS://Intranet.Example.COM:443/", Origin("https", "intranet.example.com", 443)),
        ("http://127.0.0.1:8000/app?x=1#top", Origin("http", "127.0.0.1", 8000)),
        ("http://user:pw@host:80/", Origin("http", "host", 80)),
        ("http://[::1]:8000", Origin("http", "::1", 8000)),
        ("https://[2001:DB8::1]", Origin("https", "2001:db8::1", 443)),
        ("http://upstream_app:8080/base/", Origin("http", "upstream_app", 8080)),
    ],
)
def test_the_origin_of_a_url(url: str, expected: Origin) -> None:
    assert parse_origin(url) == expected


@pytest.mark.parametrize(
    ("url", "canonical"),
    [
        ("https://example.com:443", "https://example.com"),
        ("http://example.com:80/x", "http://example.com"),
        ("http://example.com:443", "http://example.com:443"),
        ("https://EXAMPLE.com:8443", "https://example.com:8443"),
        ("http://[::1]:80", "http://[::1]"),
        ("http://[::1]:8000", "http://[::1]:8000"),
    ],
)
def test_the_canonical_form_leaves_the_default_port_out(url: str, canonical: str) -> None:
    origin = parse_origin(url)
    assert origin is not None
    assert origin.serialize() == canonical
    assert origin.authority == canonical.split("://", 1)[1]


@pytest.mark.parametrize(
    "url",
    [
        "",
        "example.com",
        "//example.com/",
        "ftp://example.com",
        "javascript:alert(1)",
        "https:example.com",
        "https://",
        "https://:443",
        "https://example.com:99999",
        "https://example.com:x",
        "http://[1:2]/",
        "http://[::1",
    ],
)
def test_urls_without_an_http_origin_have_none(url: str) -> None:
    assert parse_origin(url) is None
    assert parse_origin(url, bare=True) is None


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/app",
        "https://example.com?x=1",
        "https://example.com/#top",
        "https://user@example.com",
        "https://@example.com",
    ],
)
def test_a_bare_origin_is_nothing_but_the_origin(url: str) -> None:
    assert parse_origin(url) == Origin("https", "example.com", 443)
    assert parse_origin(url, bare=True) is None


def test_a_bare_origin_may_end_in_a_slash() -> None:
    assert parse_origin("https://example.com/", bare=True) == Origin("https", "example.com", 443)


def test_spellings_of_one_origin_are_equal() -> None:
    spellings = ["https://example.com", "https://EXAMPLE.COM:443/", "HTTPS://example.com/x"]
    assert len({parse_origin(url) for url in spellings}) == 1
