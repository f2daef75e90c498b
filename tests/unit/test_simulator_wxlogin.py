"""The simulator's ``wxLogin.js`` and the embedded QR page it frames (``login_type=jssdk``).

WeChat's script puts an iframe of ``/connect/qrconnect?...&login_type=jssdk`` into the
embedding page, copying ``redirect_uri`` into the URL as it was given (the caller encodes
it once). That page asks for no ``response_type``, fits a 300x400 frame, and sends the
*top* window to the callback unless ``self_redirect=true``. The script itself runs in a
real browser in ``tests/browser/test_login_page.py``.
"""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest
from werkzeug.test import Client, TestResponse

from gateway.simulator import Simulator

WEB = "wx5e1a2b3c4d5e6f70"
CALLBACK = "https://intranet.example.com/_gateway/callback"
WXLOGIN_JS = "/connect/zh_CN/htmledition/js/wxLogin.js"


@pytest.fixture
def client() -> Client:
    return Client(Simulator.default())


def embedded(client: Client, **overrides: str) -> TestResponse:
    """The iframe's URL as wxLogin.js builds it: values copied in, not encoded again."""
    params = {
        "appid": WEB,
        "scope": "snsapi_login",
        "redirect_uri": quote(CALLBACK, safe=""),
        "state": "abc123",
        "login_type": "jssdk",
        "self_redirect": "false",
        "styletype": "",
        "sizetype": "",
        "bgcolor": "",
        "rst": "",
        "style": "black",
        **overrides,
    }
    return client.get("/connect/qrconnect?" + "&".join(f"{k}={v}" for k, v in params.items()))


def scan_links(page: str) -> list[str]:
    return re.findall(r'<a class="btn[^"]*"[^>]*href="(/connect/scan/[^"]+)"', page)


def test_wxlogin_js_defines_wxlogin_pointing_at_this_simulator(client: Client) -> None:
    resp = client.get(WXLOGIN_JS, base_url="http://127.0.0.1:9999")
    assert resp.status_code == 200
    assert resp.mimetype == "application/javascript"
    script = resp.text
    assert "window.WxLogin = WxLogin;" in script
    assert '"http://127.0.0.1:9999/connect/qrconnect" + "?appid=" + a.appid' in script
    for piece in (
        '"&redirect_uri=" + a.redirect_uri',  # as given: encoding is the caller's job
        '"&login_type=jssdk&self_redirect=" + redirect',
        '"&styletype=" + (a.styletype || "")',
        'src += "&style=" + a.style',
        'src += "&href=" + a.href',
        'if (a.lang === "en") { src += "&lang=en"; }',
        'frame.width = "300px"',
        'frame.height = "400px"',
        "document.getElementById(a.id)",
    ):
        assert piece in script, piece


def test_embedded_page_needs_no_response_type_and_targets_the_top_window(client: Client) -> None:
    resp = embedded(client)
    assert resp.status_code == 200
    page = resp.text
    assert '<body class="embed black">' in page
    links = scan_links(page)
    assert len(links) == 4  # alice, zhangsan, bob, cancel: no snapshot user
    assert page.count('target="_top"') == 4
    assert "top=true" in page  # the poll, too, moves the top window
    assert "Phone link:" not in page
    assert re.search(r'<a class="qr" href="http://localhost/connect/confirm/[^"]+"', page)


def test_embedded_page_with_self_redirect_stays_in_the_frame(client: Client) -> None:
    page = embedded(client, self_redirect="true").text
    assert 'target="_top"' not in page
    assert "top=false" in page
    assert len(scan_links(page)) == 4


def test_embedded_page_honours_style_and_lang(client: Client) -> None:
    assert '<body class="embed white">' in embedded(client, style="white").text
    assert "Scan as Alice" in embedded(client, lang="en").text
    assert "以 Alice 身份扫码" in embedded(client).text


def test_embedded_scan_redirects_to_the_callback(client: Client) -> None:
    alice = next(link for link in scan_links(embedded(client).text) if "user=alice" in link)
    resp = client.get(alice)
    assert resp.status_code == 302
    assert resp.headers["Location"].startswith(CALLBACK + "?code=")
    assert resp.headers["Location"].endswith("&state=abc123")


def test_a_twice_encoded_redirect_uri_is_refused(client: Client) -> None:
    resp = embedded(client, redirect_uri=quote(quote(CALLBACK, safe=""), safe=""), lang="en")
    assert resp.status_code == 200
    assert 'id="error"' in resp.text and "absolute http(s) URL" in resp.text
    assert '<body class="embed black">' in resp.text
    assert scan_links(resp.text) == []


def test_the_full_page_still_wants_response_type(client: Client) -> None:
    query = f"appid={WEB}&redirect_uri={quote(CALLBACK, safe='')}&scope=snsapi_login&state=a"
    resp = client.get(f"/connect/qrconnect?{query}")
    assert "invalid response_type" in resp.text
    assert "<body>" in resp.text
