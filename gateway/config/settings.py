"""The validated settings: small immutable value objects, with the defaults in one place.

A leaf: it imports nothing from the gateway, so every part may depend on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` lists every reason, one per line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class ServerSettings:
    bind: str = "0.0.0.0:8000"
    workers: int = 2
    worker_class: str = "gevent"
    threads: int = 64
    #: Per worker. With the default two workers: 16,384 open connections (WebSockets,
    #: event streams) on one machine, each worker needing 2 x 8,192 + 256 open files.
    worker_connections: int = 8192
    keepalive: float = 5.0
    graceful_timeout: float = 30.0
    max_body_size: int = 0
    client_body_timeout: float = 60.0
    limit_request_line: int = 8190
    limit_request_fields: int = 100
    limit_request_field_size: int = 8190
    access_log: bool = True
    log_level: str = "info"
    #: ``text`` or ``json`` (one object per line), for every line the process writes.
    log_format: str = "text"
    #: Networks whose clients may read ``/_gateway/metrics`` (others get 404).
    metrics_allow: tuple[str, ...] = ("127.0.0.0/8", "::1")


@dataclass(frozen=True, slots=True)
class OfficialAccountSettings:
    app_id: str
    app_secret: str = field(repr=False)
    scope: str = "snsapi_userinfo"


@dataclass(frozen=True, slots=True)
class WeChatSettings:
    app_id: str
    app_secret: str = field(repr=False)
    open_base: str = "https://open.weixin.qq.com"
    api_base: str = "https://api.weixin.qq.com"
    lang: str = "cn"
    timeout: float = 5.0
    official_account: OfficialAccountSettings | None = None
    fetch_profile: bool = True


@dataclass(frozen=True, slots=True)
class WeComSettings:
    corp_id: str
    agent_id: int
    secret: str = field(repr=False)
    api_base: str = "https://qyapi.weixin.qq.com"
    #: The web login (``wwlogin/sso/login``).
    login_base: str = "https://login.work.weixin.qq.com"
    #: ``sso`` (the web login) or ``qrconnect`` (the legacy QR page).
    web_login: str = "sso"
    qrconnect_base: str = "https://open.work.weixin.qq.com"
    #: The in-app authorization inside the WeCom client.
    open_base: str = "https://open.weixin.qq.com"
    timeout: float = 5.0
    #: Sign in people outside the company (they have a WeCom openid only).
    allow_external: bool = False
    #: How a code is redeemed: ``auth`` (auth/getuserinfo), ``legacy`` (user/getuserinfo)
    #: or ``auto`` (auth, then legacy for good when WeCom does not answer it).
    userinfo_api: str = "auto"


@dataclass(frozen=True, slots=True)
class SessionSettings:
    secret: str = field(repr=False)
    previous_secrets: tuple[str, ...] = field(default=(), repr=False)
    cookie_name: str = "wechat_gateway"
    max_age: int = 7 * 86400
    secure: bool = True
    cookie_domain: str | None = None
    revalidate: float | None = None


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    prefix: str
    url: str
    timeout: float = 30.0
    read_timeout: float = 300.0
    host: str | None = None
    strip_prefix: bool = False
    public: bool = False
    allow: tuple[str, ...] | None = None
    #: Origins besides ``public_url``'s whose pages may open WebSockets here.
    websocket_origins: tuple[str, ...] = ()
    #: A tunnel silent both ways this long is closed; 0 never.
    websocket_idle_timeout: float = 3600.0
    #: Extra identity headers for this upstream: (name, template) pairs.
    headers: tuple[tuple[str, str], ...] = ()
    #: The ``aud`` of the assertions sent here; None: ``public_url``.
    audience: str | None = None


@dataclass(frozen=True, slots=True)
class AccessSettings:
    allow: tuple[str, ...] = ()
    allow_file: str | None = None
    public: tuple[str, ...] = ()
    api_paths: tuple[str, ...] = ()
    allow_preflight: bool = True
    trusted_proxies: tuple[str, ...] = ()
    #: Group name -> members (openid, unionid, ``wecom:USERID``, ``wecom-dept:ID``).
    groups: tuple[tuple[str, tuple[str, ...]], ...] = ()
    groups_file: str | None = None


@dataclass(frozen=True, slots=True)
class IdentitySettings:
    #: Send ``X-WeChat-Assertion`` (a signed JWT) with every request that has an identity.
    assertion: bool = True
    #: PEM files of EC P-256 private keys: the first signs, all are published. Empty: keys
    #: generated and kept (sealed) in the state store, rotated every week.
    signing_keys: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LoginSettings:
    state_ttl: float = 600.0
    mode: str = "redirect"
    title: str = ""
    logo_url: str = ""
    footer: str = ""
    wxlogin_js: str = "https://res.wx.qq.com/connect/zh_CN/htmledition/js/wxLogin.js"
    #: Sign-in starts (and, separately, callbacks) per client address: "N/DURATION".
    rate_limit: str = "600/60s"


#: Where the embedded store lives when ``state.url`` is not set: root's (and the Docker
#: image's volume) under /var/lib, anyone else's under their own XDG state directory.
DEFAULT_STATE_FILE = "/var/lib/wechat-gateway/state.db"


@dataclass(frozen=True, slots=True)
class SentinelSettings:
    master: str
    hosts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StateSettings:
    url: str = f"sqlite://{DEFAULT_STATE_FILE}"
    password: str | None = field(default=None, repr=False)
    sentinel: SentinelSettings | None = None
    cluster: bool = False
    key_prefix: str = "wechat-gateway:"
    max_staleness: float = 30.0


@dataclass(frozen=True, slots=True)
class Settings:
    public_url: str
    #: ``wechat`` and ``wecom``: either, or both; never neither.
    wechat: WeChatSettings | None
    session: SessionSettings
    upstreams: tuple[UpstreamSettings, ...]
    server: ServerSettings = ServerSettings()
    access: AccessSettings = AccessSettings()
    login: LoginSettings = LoginSettings()
    redirect_domains: tuple[str, ...] = ()
    state: StateSettings = StateSettings()
    identity: IdentitySettings = IdentitySettings()
    wecom: WeComSettings | None = None

    @property
    def provider_timeout(self) -> float:
        """The longest sign-in exchange of the configured providers."""
        return max(p.timeout for p in (self.wechat, self.wecom) if p is not None)
