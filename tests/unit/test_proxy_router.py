"""Tests for :mod:`gateway.proxy.router`: which route serves a request, and the target it
forwards. Routes are built from ``UpstreamSettings`` as the config gives them; nothing
connects (an upstream dials only when a request is forwarded)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from gateway.config import UpstreamSettings
from gateway.proxy.router import Route, Router

UPSTREAM = "http://127.0.0.1:9"


def route(prefix: str, **settings: Any) -> Route:
    return Route(UpstreamSettings(prefix=prefix, url=UPSTREAM, **settings))


@pytest.fixture
def router() -> Iterator[Router]:
    """Host-less ``/``, ``/api`` and ``/api/admin/``; ``app.example.com`` has ``/`` and
    ``/static``; ``ops.example.com:8443`` (with its port) has ``/``."""
    routes = [
        route("/"),
        route("/api"),
        route("/api/admin/"),
        route("/", host="app.example.com"),
        route("/static", host="app.example.com"),
        route("/", host="ops.example.com:8443"),
    ]
    chooser = Router(routes)
    yield chooser
    chooser.close()


def described(chosen: Route | None) -> tuple[str | None, str] | None:
    return None if chosen is None else (chosen.host, chosen.prefix)


# --- Route.matches ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "path", "matches"),
    [
        ("/", "/", True),
        ("/", "/anything/at/all", True),
        ("/api", "/api", True),
        ("/api", "/api/", True),
        ("/api", "/api/users", True),
        ("/api", "/api?page=2", True),
        ("/api", "/apiary", False),
        ("/api", "/ap", False),
        ("/api", "/", False),
        ("/api", "/API", False),
        ("/api/", "/api/users", True),
        ("/api/", "/api/", True),
        ("/api/", "/api", False),
        ("/api/v1", "/api/v1/x", True),
        ("/api/v1", "/api/v10", False),
    ],
)
def test_a_prefix_matches_whole_path_segments(prefix: str, path: str, matches: bool) -> None:
    assert route(prefix).matches(path) is matches


# --- Route.forwarded_target ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "target", "forwarded"),
    [
        ("/api", "/api/users?page=2", "/users?page=2"),
        ("/api", "/api", "/"),
        ("/api", "/api/", "/"),
        ("/api", "/api?page=2", "/?page=2"),
        ("/api/", "/api/users", "/users"),
        ("/api", "/api/a%2Fb", "/a%2Fb"),
        ("/", "/users", "/users"),
    ],
)
def test_strip_prefix_removes_the_prefix(prefix: str, target: str, forwarded: str) -> None:
    assert route(prefix, strip_prefix=True).forwarded_target(target) == forwarded


def test_without_strip_prefix_the_target_is_forwarded_as_it_came() -> None:
    assert route("/api").forwarded_target("/api/a%2Fb?x=1") == "/api/a%2Fb?x=1"


def test_a_route_carries_its_own_policy() -> None:
    plain = route("/")
    assert (plain.public, plain.allow) == (False, None)
    own = route("/admin", public=True, allow=("oAdminOpenID",))
    assert own.public is True
    assert own.allow is not None and own.allow.ids == frozenset({"oAdminOpenID"})


# --- Router.choose ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/", (None, "/")),
        ("/api/users", (None, "/api")),
        ("/api/admin/users", (None, "/api/admin/")),
        ("/api/admin", (None, "/api")),
        ("/apiary", (None, "/")),
    ],
)
def test_the_longest_matching_prefix_wins(
    router: Router, path: str, expected: tuple[str | None, str]
) -> None:
    assert described(router.choose(path)) == expected


def test_the_order_of_the_routes_does_not_matter() -> None:
    router = Router([route("/api/admin/"), route("/"), route("/api")])
    assert described(router.choose("/api/admin/x")) == (None, "/api/admin/")
    assert described(router.choose("/api/x")) == (None, "/api")
    assert described(router.choose("/x")) == (None, "/")


@pytest.mark.parametrize(
    ("host", "path", "expected"),
    [
        # The host's own routes come first, even against a longer host-less prefix.
        ("app.example.com", "/api/users", ("app.example.com", "/")),
        ("app.example.com", "/static/a.css", ("app.example.com", "/static")),
        ("APP.Example.COM", "/", ("app.example.com", "/")),
        ("app.example.com:8000", "/", ("app.example.com", "/")),
        ("ops.example.com:8443", "/", ("ops.example.com:8443", "/")),
        # A port the route does not name, and hosts with no routes, use the host-less ones.
        ("ops.example.com:9000", "/api/x", (None, "/api")),
        ("other.example.com", "/api/x", (None, "/api")),
        (None, "/api/x", (None, "/api")),
        ("", "/", (None, "/")),
    ],
)
def test_routes_for_the_host_come_first(
    router: Router, host: str | None, path: str, expected: tuple[str | None, str]
) -> None:
    assert described(router.choose(path, host)) == expected


def test_a_host_falls_back_to_the_host_less_routes_when_none_of_its_own_match() -> None:
    router = Router([route("/static", host="app.example.com"), route("/")])
    assert described(router.choose("/page", "app.example.com")) == (None, "/")


def test_no_matching_route_is_none() -> None:
    router = Router([route("/api"), route("/", host="app.example.com")])
    assert router.choose("/elsewhere") is None
    assert router.choose("/elsewhere", "other.example.com") is None
    assert described(router.choose("/elsewhere", "app.example.com")) == ("app.example.com", "/")
