"""``docs/recipes/radicale.md``, run: Radicale from PyPI behind the real gateway.

Radicale is started as its users start it (``python -m radicale --config FILE``) with the
recipe's own ``ini`` block, read from the page, on a free loopback port with a temporary
storage folder; the gateway (``wechat-gateway serve``, gunicorn) runs the recipe's ``yaml``
block in front of it. Users sign in through the simulated WeChat hop by hop (``WeChat.sign_in``)
and talk CalDAV through the gateway with raw sockets, so header spellings reach the gateway
exactly as written.

- alice creates a calendar (``MKCALENDAR /radicale/<openid>/cal/``), puts an event in it and
  reads it back; the web UI loads and its login request finds her principal;
- bob gets ``403`` for alice's calendar and event, and his own principal;
- a client's ``X-Remote-User`` naming alice, in any case and with ``_``, alone or all at once,
  leaves bob bob, although Radicale reached directly believes every one of those spellings;
- without a session the gateway answers (``302``/``401``) and Radicale's log shows no request.

Radicale answers each ``403`` after a deliberate one-second delay (its ``[auth] delay``), so
the ``403`` checks are few.
"""

from __future__ import annotations

import configparser
import re
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.helpers.raw_e2e import RawBrowser, Reply, WeChat, send
from tests.helpers.support import (
    HTML_ACCEPT,
    GatewayProcess,
    base_config,
    free_port,
    stop_process,
    wait_for_port,
)

RECIPE = Path(__file__).resolve().parents[2] / "docs" / "recipes" / "radicale.md"
DAV = "{DAV:}"

#: Every way a client might spell Radicale's header (WSGI servers read ``_`` as ``-``).
FORGED_NAMES = (
    "X-Remote-User",
    "x-remote-user",
    "X-REMOTE-USER",
    "X-Remote-user",
    "X_Remote_User",
    "x_remote_user",
    "X-Remote_User",
    "X_REMOTE-USER",
)

EVENT = """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//wechat-gateway//recipe test//EN
BEGIN:VEVENT
UID:recipe-test-1@example.com
DTSTAMP:20260101T090000Z
DTSTART:20260102T100000Z
DTEND:20260102T110000Z
SUMMARY:Tea with the gateway
END:VEVENT
END:VCALENDAR
""".replace("\n", "\r\n")

PRINCIPAL_QUERY = (
    b'<?xml version="1.0" encoding="utf-8" ?>'
    b'<propfind xmlns="DAV:"><prop><current-user-principal /><displayname /></prop></propfind>'
)


# --- the recipe, as written --------------------------------------------------------------------


def recipe_blocks() -> tuple[dict[str, Any], configparser.ConfigParser]:
    """The page's first ``yaml`` block (the gateway) and first ``ini`` block (Radicale)."""
    text = RECIPE.read_text(encoding="utf-8")
    blocks: dict[str, str] = {}
    for language, body in re.findall(r"^```(\w+)\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        blocks.setdefault(language, body)
    gateway = yaml.safe_load(blocks["yaml"])
    radicale = configparser.ConfigParser(interpolation=None)
    radicale.read_string(blocks["ini"])
    return gateway, radicale


def test_the_recipe_keeps_radicale_on_loopback_behind_the_prefix() -> None:
    gateway, radicale = recipe_blocks()
    (upstream,) = gateway["upstreams"]
    host, _, port = radicale["server"]["hosts"].rpartition(":")
    assert host == "127.0.0.1"  # the header is believed: nothing but the gateway may connect
    assert urlsplit(upstream["url"]).netloc == f"127.0.0.1:{port}"
    # /radicale itself stays away from Radicale: 3.9 answers it 500 once script_name is removed.
    assert upstream["prefix"] == radicale["server"]["script_name"] + "/" == "/radicale/"
    assert not upstream.get("strip_prefix", False)
    assert upstream["headers"] == {"X-Remote-User": "{openid}"}
    assert radicale["auth"]["type"] == "http_x_remote_user"
    assert radicale["rights"]["type"] == "owner_only"


# --- Radicale and the gateway, running ----------------------------------------------------------


@dataclass
class Deployment:
    gateway: GatewayProcess
    wechat: WeChat
    storage: Path
    radicale_log: Path
    radicale_port: int
    prefix: str  # Radicale's script_name: "/radicale"

    def url(self, path: str) -> str:
        return f"{self.gateway.url}{self.prefix}{path}"

    def radicale_requests(self) -> int:
        """How many requests Radicale has logged so far."""
        log = self.radicale_log.read_text(encoding="utf-8", errors="replace")
        return len(re.findall(r" request for '", log))


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, wechat_app: WeChat
) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("radicale")
    gateway_block, radicale_config = recipe_blocks()

    port = free_port()
    storage = tmp / "collections"
    radicale_config["server"]["hosts"] = f"127.0.0.1:{port}"
    radicale_config["storage"]["filesystem_folder"] = str(storage)
    if not radicale_config.has_section("logging"):
        radicale_config.add_section("logging")
    radicale_config["logging"]["level"] = "info"  # a line per request: "... request for '/x'"
    config_path = tmp / "radicale.ini"
    with config_path.open("w", encoding="utf-8") as file:
        radicale_config.write(file)

    log_path = tmp / "radicale.log"
    with log_path.open("wb") as log:
        radicale = subprocess.Popen(
            [sys.executable, "-m", "radicale", "--config", str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        try:
            wait_for_port(port, timeout=15)
        except TimeoutError:
            pytest.fail(f"Radicale did not start:\n{log_path.read_text(errors='replace')}")

        upstreams = [
            {**entry, "url": f"http://127.0.0.1:{port}"} for entry in gateway_block["upstreams"]
        ]
        gateway_port = free_port()
        config = base_config(
            gateway_port,
            upstreams[0]["url"],
            wechat={**wechat_app.settings()},
            upstreams=upstreams,
        )
        with GatewayProcess(config, tmp) as gateway:
            base = radicale_config["server"]["script_name"]
            yield Deployment(gateway, wechat_app, storage, log_path, port, base)
    finally:
        stop_process(radicale, signal.SIGTERM, timeout=10)


@dataclass
class User:
    name: str
    openid: str
    browser: RawBrowser


def signed_in(deployment: Deployment, name: str) -> User:
    browser = RawBrowser()
    reply = deployment.wechat.sign_in(
        browser, f"{deployment.gateway.url}/_gateway/login?rd={deployment.prefix}/", name
    )
    assert reply.status == 302, (reply.status, reply.text[:300])
    return User(name, deployment.wechat.openid(name), browser)


@pytest.fixture(scope="module")
def alice(deployment: Deployment) -> User:
    return signed_in(deployment, "alice")


@pytest.fixture(scope="module")
def bob(deployment: Deployment) -> User:
    return signed_in(deployment, "bob")


def dav(
    user: User | None,
    deployment: Deployment,
    method: str,
    path: str,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
) -> Reply:
    """One WebDAV request through the gateway, as ``user`` (with their cookie) or nobody."""
    sent = [("Accept", "*/*"), *(headers or [])]
    if body:
        sent.append(("Content-Type", "application/xml; charset=utf-8"))
    if user is None:
        return send(
            deployment.gateway.port, f"{deployment.prefix}{path}", sent, method=method, body=body
        )
    return user.browser.get(deployment.url(path), sent, method=method, body=body)


def principal_of(reply: Reply) -> str:
    """``current-user-principal`` of a ``PROPFIND`` answer."""
    assert reply.status == 207, (reply.status, reply.text[:500])
    href = ET.fromstring(reply.body).find(f".//{DAV}current-user-principal/{DAV}href")
    assert href is not None and href.text, reply.text[:500]
    return href.text


def who_am_i(
    user: User, deployment: Deployment, headers: list[tuple[str, str]] | None = None
) -> str:
    """What Radicale says the current user's principal is: the web UI's login request."""
    return principal_of(
        dav(user, deployment, "PROPFIND", "/", [("Depth", "0"), *(headers or [])], PRINCIPAL_QUERY)
    )


@pytest.fixture(scope="module")
def alice_event(deployment: Deployment, alice: User) -> str:
    """alice's calendar, made through the gateway; the path of the event in it."""
    calendar = f"/{alice.openid}/cal/"
    made = dav(alice, deployment, "MKCALENDAR", calendar)
    assert made.status == 201, (made.status, made.text[:300])
    event = f"{calendar}tea.ics"
    put = alice.browser.get(
        deployment.url(event),
        [("Content-Type", "text/calendar; charset=utf-8")],
        method="PUT",
        body=EVENT.encode(),
    )
    assert put.status == 201, (put.status, put.text[:300])
    return event


# --- the tests ---------------------------------------------------------------------------------


def test_alice_creates_a_calendar_and_reads_her_event_back(
    deployment: Deployment, alice: User, alice_event: str
) -> None:
    read = alice.browser.get(deployment.url(alice_event))
    assert read.status == 200, (read.status, read.text[:300])
    assert (read.value("Content-Type") or "").startswith("text/calendar")
    assert "SUMMARY:Tea with the gateway" in read.text
    assert "UID:recipe-test-1@example.com" in read.text

    # Her principal lists the calendar, under the gateway's prefix (script_name).
    listing = dav(alice, deployment, "PROPFIND", f"/{alice.openid}/", [("Depth", "1")])
    assert listing.status == 207, (listing.status, listing.text[:500])
    hrefs = [h.text for h in ET.fromstring(listing.body).iter(f"{DAV}href")]
    assert f"/radicale/{alice.openid}/cal/" in hrefs, hrefs

    # On disk, under her openid: the user name is what the gateway sent.
    assert (deployment.storage / "collection-root" / alice.openid / "cal").is_dir()
    assert who_am_i(alice, deployment) == f"/radicale/{alice.openid}/"


def test_bob_sees_his_own_principal_and_not_alices_calendar(
    deployment: Deployment, alice: User, bob: User, alice_event: str
) -> None:
    assert bob.openid != alice.openid
    assert who_am_i(bob, deployment) == f"/radicale/{bob.openid}/"

    event = bob.browser.get(deployment.url(alice_event))
    assert event.status == 403, (event.status, event.text[:300])
    assert b"Tea with the gateway" not in event.body
    listing = dav(bob, deployment, "PROPFIND", f"/{alice.openid}/cal/", [("Depth", "1")])
    assert listing.status == 403, (listing.status, listing.text[:300])


def test_radicale_itself_believes_every_spelling_of_x_remote_user(
    deployment: Deployment, alice: User
) -> None:
    """Why the gateway must remove them all, and why Radicale listens on loopback only:
    straight to Radicale, any spelling of the header is the user."""
    for name in FORGED_NAMES:
        reply = send(
            deployment.radicale_port,
            f"{deployment.prefix}/",
            [("X-Forwarded-For", "192.0.2.1"), (name, alice.openid), ("Depth", "0")],
            method="PROPFIND",
            body=PRINCIPAL_QUERY,
        )
        assert principal_of(reply) == f"/radicale/{alice.openid}/", name


def test_a_forged_x_remote_user_never_makes_bob_alice(
    deployment: Deployment, alice: User, bob: User, alice_event: str
) -> None:
    for name in FORGED_NAMES:
        principal = who_am_i(bob, deployment, [(name, alice.openid)])
        assert principal == f"/radicale/{bob.openid}/", name
    every_spelling = [(name, alice.openid) for name in FORGED_NAMES]
    assert who_am_i(bob, deployment, every_spelling) == f"/radicale/{bob.openid}/"

    forged = bob.browser.get(deployment.url(alice_event), every_spelling)
    assert forged.status == 403, (forged.status, forged.text[:300])
    assert b"Tea with the gateway" not in forged.body


def test_without_a_session_the_gateway_answers_and_radicale_is_never_reached(
    deployment: Deployment, alice: User, alice_event: str
) -> None:
    forged = [(name, alice.openid) for name in FORGED_NAMES]
    before = deployment.radicale_requests()

    page = send(deployment.gateway.port, "/radicale/.web/", [("Accept", HTML_ACCEPT), *forged])
    assert page.status == 302, (page.status, page.text[:300])
    assert "/_gateway/login" in page.location

    for method, path, body in [
        ("PROPFIND", "/", PRINCIPAL_QUERY),  # the web UI's probe: made without cookies
        ("MKCALENDAR", f"/{alice.openid}/forged/", b""),
        ("PUT", alice_event, EVENT.replace("Tea", "Forged tea").encode()),
        ("DELETE", alice_event, b""),
    ]:
        reply = dav(None, deployment, method, path, forged, body)
        assert reply.status == 401, (method, path, reply.status, reply.text[:300])
        assert reply.json().get("login_url"), reply.text[:300]
    # A GET is a page a browser may show: the sign-in redirect, whatever it accepts.
    reply = dav(None, deployment, "GET", alice_event, forged)
    assert reply.status == 302, (reply.status, reply.text[:300])
    assert "/_gateway/login" in reply.location

    # Radicale logs each request as it starts on it, before it answers: nothing to wait for.
    assert deployment.radicale_requests() == before, deployment.radicale_log.read_text()
    assert not (deployment.storage / "collection-root" / alice.openid / "forged").exists()
    still = alice.browser.get(deployment.url(alice_event))
    assert still.status == 200 and "Tea with the gateway" in still.text
    assert deployment.radicale_requests() == before + 1  # the count does see requests


def test_the_web_ui_loads_through_the_gateway(deployment: Deployment, alice: User) -> None:
    start = alice.browser.get(deployment.url("/"))
    assert start.status in (301, 302, 303), (start.status, start.text[:300])
    assert urlsplit(start.location).path == "/radicale/.web"
    page = alice.browser.get(deployment.url("/.web/"))
    assert page.status == 200, (page.status, page.text[:300])
    assert "Radicale" in page.text
    assert 'data-name="user"' in page.text  # the login form whose request who_am_i makes
