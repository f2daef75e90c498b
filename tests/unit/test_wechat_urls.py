"""The URLs the WeChat client sends a browser to, exactly. The client's calls, against
the simulator on a real loopback socket, are ``tests/e2e/test_wechat.py``."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from gateway.providers.wechat.client import WeChatClient

CALLBACK = "https://intranet.example.com/_gateway/callback"

# --- URL builders -------------------------------------------------------------------------


def test_qrconnect_url_exact() -> None:
    client = WeChatClient(
        "wx0123456789abcdef",
        "s",
        api_base="https://api.weixin.qq.com",
        open_base="https://open.weixin.qq.com/",
        timeout=5,
        lang="en",
    )
    assert client.qrconnect_url(CALLBACK, "Ab12") == (
        "https://open.weixin.qq.com/connect/qrconnect?appid=wx0123456789abcdef"
        "&redirect_uri=https%3A%2F%2Fintranet.example.com%2F_gateway%2Fcallback"
        "&response_type=code&scope=snsapi_login&state=Ab12&lang=en#wechat_redirect"
    )


def test_oauth2_authorize_url_exact_and_encoded_once() -> None:
    client = WeChatClient(
        "wx0123456789abcdef",
        "s",
        api_base="https://api.weixin.qq.com",
        open_base="https://open.weixin.qq.com",
        timeout=5,
    )
    url = client.oauth2_authorize_url(CALLBACK + "?a=b c&d=%2F", "x" * 128, "snsapi_userinfo")
    assert url == (
        "https://open.weixin.qq.com/connect/oauth2/authorize?appid=wx0123456789abcdef"
        "&redirect_uri=https%3A%2F%2Fintranet.example.com%2F_gateway%2Fcallback"
        "%3Fa%3Db%20c%26d%3D%252F"
        f"&response_type=code&scope=snsapi_userinfo&state={'x' * 128}#wechat_redirect"
    )
    query = parse_qs(urlsplit(url).query)
    assert query["redirect_uri"] == [CALLBACK + "?a=b c&d=%2F"]
