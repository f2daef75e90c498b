"""Validation: the parsed YAML tree into ``Settings``, or every problem at once.

Validation never stops at the first problem: it collects every one, each naming its key
path (``upstreams[0].url: must be an http or https URL``), so an operator fixes a broken
file in one round. Unknown keys are errors with a "did you mean" hint, because a misspelt
key that is silently ignored is how an auth gateway ends up open. No message echoes a
value: it only needs to say what is wrong and where.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from gateway.auth.access import parse_public_rule
from gateway.auth.cookies import HOST_PREFIX, SECURE_PREFIX, cookie_prefix
from gateway.auth.redirects import RedirectPolicy
from gateway.config.environ import expand
from gateway.config.fields import (
    HOSTNAME,
    check_bind,
    check_sqlite_location,
    default_state_url,
    http_url,
    origin_url,
    parse_duration,
    parse_rate,
    parse_size,
)
from gateway.config.settings import (
    AccessSettings,
    ConfigError,
    IdentitySettings,
    LoginSettings,
    OfficialAccountSettings,
    SentinelSettings,
    ServerSettings,
    SessionSettings,
    Settings,
    StateSettings,
    UpstreamSettings,
    WeChatSettings,
    WeComSettings,
)
from gateway.identity.groups import member_key, parse_groups, read_groups_file
from gateway.identity.keys import load_key_file
from gateway.identity.templates import check_header_name, parse_template
from gateway.state.redis_settings import check_redis_settings

_WORKER_CLASSES = ("gevent", "gthread")
_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class _Section:
    """One mapping of the config being validated: typed getters that record problems."""

    def __init__(
        self,
        data: object,
        path: str,
        known: tuple[str, ...],
        problems: list[str],
        failed: set[str],
    ) -> None:
        self.path = path
        self.problems = problems
        self.failed = failed
        self.data: dict[str, Any] = {}
        if data is None:
            return
        if not isinstance(data, dict):
            problems.append(f"{path or 'config'}: must be a mapping of keys")
            return
        for key, value in data.items():
            if not isinstance(key, str) or key not in known:
                hint = difflib.get_close_matches(str(key), known, n=1)
                suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
                problems.append(f"{self.key_path(str(key))}: unknown key{suggestion}")
                continue
            self.data[key] = value

    def key_path(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def raw(self, key: str) -> object:
        return self.data.get(key)

    def problem(self, key: str, message: str) -> None:
        path = self.key_path(key)
        if path not in self.failed:  # already reported: an unset environment variable
            self.problems.append(f"{path}: {message}")

    def _get(self, key: str, default: Any, convert: Callable[[object], Any], required: bool) -> Any:
        if not self.has(key):
            if required:
                self.problem(key, "required")
            return default
        try:
            return convert(self.data[key])
        except ValueError as exc:
            self.problem(key, str(exc))
            return default

    def string(self, key: str, default: str = "", *, required: bool = False) -> str:
        def convert(value: object) -> str:
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise ValueError("must be a string")
            text = str(value)
            if required and not text.strip():
                raise ValueError("required (it is empty)")
            return text

        result: str = self._get(key, default, convert, required)
        return result

    def integer(
        self, key: str, default: int, *, minimum: int = 0, maximum: int | None = None
    ) -> int:
        def convert(value: object) -> int:
            if isinstance(value, str) and value.strip().isdigit():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError("must be a whole number")
            if value < minimum or (maximum is not None and value > maximum):
                upper = f" and at most {maximum}" if maximum is not None else ""
                raise ValueError(f"must be at least {minimum}{upper}")
            return value

        result: int = self._get(key, default, convert, False)
        return result

    def boolean(self, key: str, default: bool) -> bool:
        def convert(value: object) -> bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "1"):
                return True
            if isinstance(value, str) and value.strip().lower() in ("false", "no", "off", "0"):
                return False
            raise ValueError("must be true or false")

        result: bool = self._get(key, default, convert, False)
        return result

    def duration(
        self, key: str, default: float, *, positive: bool = False, maximum: str | None = None
    ) -> float:
        """A duration; ``maximum`` is the longest allowed, written as a duration ("1d")."""

        def convert(value: object) -> float:
            seconds = parse_duration(value, longest=maximum or "36500d")
            if positive and seconds <= 0:
                raise ValueError("must be greater than zero")
            return seconds

        result: float = self._get(key, default, convert, False)
        return result

    def size(self, key: str, default: int) -> int:
        result: int = self._get(key, default, parse_size, False)
        return result

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        def convert(value: object) -> str:
            if not isinstance(value, str) or value not in choices:
                raise ValueError(f"must be one of: {', '.join(choices)}")
            return value

        result: str = self._get(key, default, convert, False)
        return result

    def string_list(self, key: str) -> tuple[str, ...]:
        value = self.raw(key)
        if value is None:
            return ()
        if not isinstance(value, list):
            self.problem(key, "must be a list")
            return ()
        items: list[str] = []
        for i, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, str | int):
                self.problems.append(f"{self.key_path(key)}[{i}]: must be a string")
            else:
                items.append(str(item))
        return tuple(items)

    def section(self, key: str, known: tuple[str, ...]) -> _Section:
        return _Section(self.raw(key), self.key_path(key), known, self.problems, self.failed)


_TOP_KEYS = (
    "public_url",
    "server",
    "wechat",
    "session",
    "upstreams",
    "access",
    "login",
    "redirect_domains",
    "state",
    "identity",
    "wecom",
)
_SERVER_KEYS = tuple(ServerSettings.__dataclass_fields__)
_WECHAT_KEYS = tuple(WeChatSettings.__dataclass_fields__)
_WECOM_KEYS = tuple(WeComSettings.__dataclass_fields__)
_OA_KEYS = tuple(OfficialAccountSettings.__dataclass_fields__)
_SESSION_KEYS = tuple(SessionSettings.__dataclass_fields__)
_UPSTREAM_KEYS = tuple(UpstreamSettings.__dataclass_fields__)
_ACCESS_KEYS = tuple(AccessSettings.__dataclass_fields__)
_IDENTITY_KEYS = tuple(IdentitySettings.__dataclass_fields__)
_LOGIN_KEYS = tuple(LoginSettings.__dataclass_fields__)
_STATE_KEYS = tuple(StateSettings.__dataclass_fields__)


def validate(raw: Mapping[str, Any], environ: Mapping[str, str]) -> Settings:
    """Turn the parsed YAML into Settings, or raise ConfigError with every problem found."""
    problems: list[str] = []
    failed: set[str] = set()
    expanded = expand(dict(raw), "", environ, problems, failed)
    top = _Section(expanded, "", _TOP_KEYS, problems, failed)

    public_url = top.string("public_url", required=True)
    origin = origin_url(public_url) if public_url else None
    if public_url and origin is None:
        top.problem(
            "public_url",
            "must be an http or https origin such as https://intranet.example.com (no path)",
        )

    server = _validate_server(top.section("server", _SERVER_KEYS))
    wecom = (
        _validate_wecom(top.section("wecom", _WECOM_KEYS)) if top.raw("wecom") is not None else None
    )
    # With wecom set, wechat is optional; without either, wechat's keys are the ones missing.
    wechat = (
        _validate_wechat(top.section("wechat", _WECHAT_KEYS))
        if top.raw("wechat") is not None or wecom is None
        else None
    )
    if top.raw("wechat") is None and top.raw("wecom") is None:
        problems.append("wechat or wecom: configure at least one sign-in provider")
    session = _validate_session(
        top.section("session", _SESSION_KEYS), https=bool(origin and origin.startswith("https:"))
    )
    upstreams = _validate_upstreams(top)
    access = _validate_access(top.section("access", _ACCESS_KEYS))
    login = _validate_login(top.section("login", _LOGIN_KEYS))
    state = _validate_state(top.section("state", _STATE_KEYS))
    identity = _validate_identity(top.section("identity", _IDENTITY_KEYS))
    _check_group_references(access, upstreams, problems)
    redirect_domains = top.string_list("redirect_domains")
    for i, entry in enumerate(redirect_domains):
        problem = check_redirect_domain(entry)
        if problem:
            problems.append(f"redirect_domains[{i}]: {problem}")

    if problems:
        raise ConfigError(problems)
    assert origin is not None and (wechat or wecom) is not None and session is not None
    return Settings(
        public_url=origin,
        wechat=wechat,
        wecom=wecom,
        session=session,
        upstreams=upstreams,
        server=server,
        access=access,
        login=login,
        redirect_domains=redirect_domains,
        state=state,
        identity=identity,
    )


def _validate_identity(section: _Section) -> IdentitySettings:
    paths = section.string_list("signing_keys")
    for i, path in enumerate(paths):
        try:
            load_key_file(path)
        except ValueError as exc:
            section.problems.append(f"{section.key_path('signing_keys')}[{i}]: {path}: {exc}")
    return IdentitySettings(assertion=section.boolean("assertion", True), signing_keys=paths)


def _check_group_references(
    access: AccessSettings, upstreams: tuple[UpstreamSettings, ...], problems: list[str]
) -> None:
    """``group:NAME`` in an allow list must name a group, unless a groups file may add it;
    ``wecom:USERID`` and ``wecom-dept:ID`` must be well formed (a typo would match nobody)."""
    known = {name for name, _ in access.groups}
    lists = [("access.allow", access.allow)]
    lists += [(f"upstreams[{i}].allow", u.allow or ()) for i, u in enumerate(upstreams)]
    for where, entries in lists:
        for j, entry in enumerate(entries):
            if entry.startswith("group:"):
                if access.groups_file is None and entry[6:] not in known:
                    problems.append(f"{where}[{j}]: no group {entry[6:]!r} in access.groups")
            elif entry.startswith(("wecom:", "wecom-dept:")):
                try:
                    member_key(entry)
                except ValueError:
                    problems.append(
                        f"{where}[{j}]: not a WeCom member: use wecom:USERID (letters, digits"
                        " and _-@.) or wecom-dept:ID (a number)"
                    )


def _validate_state(section: _Section) -> StateSettings:
    defaults = StateSettings()
    url = section.string("url", "") or default_state_url()
    password = section.string("password", "") or None
    sentinel = None
    if section.has("sentinel"):
        sub = section.section("sentinel", ("master", "hosts"))
        master = sub.string("master", required=True)
        hosts = sub.string_list("hosts")
        if not hosts:
            sub.problem("hosts", "required: at least one host:port")
        for i, host in enumerate(hosts):
            if not re.fullmatch(r"[A-Za-z0-9.\-]+:\d{1,5}", host):
                sub.problem(f"hosts[{i}]", "must be host:port")
        sentinel = SentinelSettings(master, hosts)
    cluster = section.boolean("cluster", defaults.cluster)
    if url.startswith("sqlite:"):
        problem = check_sqlite_location(url)
        if problem:
            section.problem("url", problem)
        if sentinel is not None or cluster or password:
            section.problem("url", "sentinel, cluster and password go with a Redis url")
    else:
        key_prefix = section.string("key_prefix", defaults.key_prefix)
        # Its messages name their key path (state.url, state.key_prefix...) themselves.
        section.problems.extend(
            check_redis_settings(
                url, sentinel=sentinel is not None, cluster=cluster, key_prefix=key_prefix
            )
        )
    return StateSettings(
        url=url,
        password=password,
        sentinel=sentinel,
        cluster=cluster,
        key_prefix=section.string("key_prefix", defaults.key_prefix),
        max_staleness=section.duration(
            "max_staleness", defaults.max_staleness, positive=True, maximum="1d"
        ),
    )


def check_redirect_domain(entry: str) -> str | None:
    """What is wrong with a ``redirect_domains`` entry, or None."""
    try:
        RedirectPolicy("https://example.invalid", (entry,))
    except ValueError:
        return "must be a host name, optionally with a leading '.' or '*.' and a ':port' or ':*'"
    return None


def _validate_login(section: _Section) -> LoginSettings:
    defaults = LoginSettings()
    wxlogin_js = section.string("wxlogin_js", defaults.wxlogin_js)
    if http_url(wxlogin_js) is None:
        section.problem("wxlogin_js", "must be an http or https URL")
    logo_url = section.string("logo_url", "")
    if (
        logo_url
        and http_url(logo_url) is None
        and not (logo_url.startswith("/") and not logo_url.startswith("//"))
    ):
        section.problem("logo_url", "must be an http or https URL or a path starting with /")
    return LoginSettings(
        state_ttl=section.duration("state_ttl", defaults.state_ttl, positive=True, maximum="1d"),
        mode=section.choice("mode", defaults.mode, ("redirect", "page")),
        title=section.string("title", ""),
        logo_url=logo_url,
        footer=section.string("footer", ""),
        wxlogin_js=wxlogin_js,
        rate_limit=_rate(section, "rate_limit", defaults.rate_limit),
    )


def _rate(section: _Section, key: str, default: str) -> str:
    text = section.string(key, default)
    try:
        parse_rate(text)
    except ValueError as exc:
        section.problem(key, str(exc))
    return text


def _validate_access(section: _Section) -> AccessSettings:
    public = section.string_list("public")
    for i, entry in enumerate(public):
        try:
            parse_public_rule(entry)
        except ValueError as exc:
            section.problems.append(f"{section.key_path('public')}[{i}]: {exc}")
    api_paths = section.string_list("api_paths")
    for i, prefix in enumerate(api_paths):
        if not prefix.startswith("/"):
            section.problems.append(f"{section.key_path('api_paths')}[{i}]: must start with /")
    trusted = section.string_list("trusted_proxies")
    for i, network in enumerate(trusted):
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            section.problems.append(
                f"{section.key_path('trusted_proxies')}[{i}]: must be an IP address or network"
                " such as 10.0.0.0/8"
            )
    allow_file = section.string("allow_file", "") or None
    if allow_file is not None and not os.path.isfile(allow_file):
        section.problem("allow_file", "file not found")
    groups: tuple[tuple[str, tuple[str, ...]], ...] = ()
    try:
        raw_groups = section.raw("groups")
        parse_groups(raw_groups, section.key_path("groups"))
        if isinstance(raw_groups, dict):
            groups = tuple((name, tuple(map(str, m or ()))) for name, m in raw_groups.items())
    except ValueError as exc:
        section.problems.extend(str(exc).splitlines())
    groups_file = section.string("groups_file", "") or None
    if groups_file is not None:
        try:
            read_groups_file(groups_file)
        except FileNotFoundError:
            section.problem("groups_file", "file not found")
        except (OSError, UnicodeDecodeError) as exc:
            section.problem("groups_file", f"cannot be read ({exc})")
        except ValueError as exc:
            section.problems.extend(
                f"{section.key_path('groups_file')}: {line}" for line in str(exc).splitlines()
            )
    return AccessSettings(
        allow=section.string_list("allow"),
        allow_file=allow_file,
        public=public,
        api_paths=api_paths,
        allow_preflight=section.boolean("allow_preflight", True),
        trusted_proxies=trusted,
        groups=groups,
        groups_file=groups_file,
    )


def _networks(section: _Section, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    if not section.has(key):
        return default
    networks = section.string_list(key)
    for i, network in enumerate(networks):
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            section.problems.append(
                f"{section.key_path(key)}[{i}]: must be an IP address or network such as 10.0.0.0/8"
            )
    return networks


def _validate_server(section: _Section) -> ServerSettings:
    defaults = ServerSettings()
    bind = section.string("bind", defaults.bind)
    bind_problem = check_bind(bind) if bind else None
    if bind_problem:
        section.problem("bind", bind_problem)
    return ServerSettings(
        bind=bind,
        workers=section.integer("workers", defaults.workers, minimum=1, maximum=256),
        worker_class=section.choice("worker_class", defaults.worker_class, _WORKER_CLASSES),
        threads=section.integer("threads", defaults.threads, minimum=1, maximum=4096),
        worker_connections=section.integer(
            "worker_connections", defaults.worker_connections, minimum=1
        ),
        keepalive=section.duration("keepalive", defaults.keepalive),
        graceful_timeout=section.duration("graceful_timeout", defaults.graceful_timeout),
        max_body_size=section.size("max_body_size", defaults.max_body_size),
        client_body_timeout=section.duration(
            "client_body_timeout", defaults.client_body_timeout, positive=True
        ),
        limit_request_line=section.integer(
            "limit_request_line", defaults.limit_request_line, minimum=256, maximum=65535
        ),
        limit_request_fields=section.integer(
            "limit_request_fields", defaults.limit_request_fields, minimum=1, maximum=32768
        ),
        limit_request_field_size=section.integer(
            "limit_request_field_size", defaults.limit_request_field_size, minimum=256
        ),
        access_log=section.boolean("access_log", defaults.access_log),
        log_level=section.choice("log_level", defaults.log_level, _LOG_LEVELS),
        log_format=section.choice("log_format", defaults.log_format, ("text", "json")),
        metrics_allow=_networks(section, "metrics_allow", defaults.metrics_allow),
    )


def _validate_wechat(section: _Section) -> WeChatSettings | None:
    app_id = section.string("app_id", required=True)
    app_secret = section.string("app_secret", required=True)
    open_base = _base_url(section, "open_base", "https://open.weixin.qq.com")
    api_base = _base_url(section, "api_base", "https://api.weixin.qq.com")
    lang = section.choice("lang", "cn", ("cn", "en"))
    timeout = section.duration("timeout", 5.0, positive=True)
    official_account = None
    if section.has("official_account"):
        oa = section.section("official_account", _OA_KEYS)
        official_account = OfficialAccountSettings(
            app_id=oa.string("app_id", required=True),
            app_secret=oa.string("app_secret", required=True),
            scope=oa.choice("scope", "snsapi_userinfo", ("snsapi_userinfo", "snsapi_base")),
        )
    return WeChatSettings(
        fetch_profile=section.boolean("fetch_profile", True),
        app_id=app_id,
        app_secret=app_secret,
        open_base=open_base,
        api_base=api_base,
        lang=lang,
        timeout=timeout,
        official_account=official_account,
    )


_CORP_ID = re.compile(r"[A-Za-z0-9]{1,64}")


def _validate_wecom(section: _Section) -> WeComSettings:
    defaults = WeComSettings("", 0, "")
    corp_id = section.string("corp_id", required=True)
    if corp_id and not _CORP_ID.fullmatch(corp_id):
        section.problem("corp_id", "must be the corp id from 我的企业 (letters and digits, ww…)")
    agent_id = section.integer("agent_id", 0, minimum=1)
    if not section.has("agent_id"):
        section.problem("agent_id", "required (the app's AgentId, e.g. 1000002)")
    secret = section.string("secret", required=True)
    return WeComSettings(
        corp_id=corp_id,
        agent_id=agent_id,
        secret=secret,
        api_base=_base_url(section, "api_base", defaults.api_base),
        login_base=_base_url(section, "login_base", defaults.login_base),
        web_login=section.choice("web_login", defaults.web_login, ("sso", "qrconnect")),
        qrconnect_base=_base_url(section, "qrconnect_base", defaults.qrconnect_base),
        open_base=_base_url(section, "open_base", defaults.open_base),
        timeout=section.duration("timeout", defaults.timeout, positive=True, maximum="60s"),
        allow_external=section.boolean("allow_external", defaults.allow_external),
        userinfo_api=section.choice(
            "userinfo_api", defaults.userinfo_api, ("auto", "auth", "legacy")
        ),
    )


def _base_url(section: _Section, key: str, default: str) -> str:
    value = section.string(key, default)
    url = http_url(value)
    if url is None:
        section.problem(key, "must be an http or https URL")
        return default
    return url


def _validate_session(section: _Section, *, https: bool) -> SessionSettings | None:
    secret = section.string("secret", required=True)
    if secret and len(secret) < 32:
        section.problem(
            "secret", "must be at least 32 characters (run `wechat-gateway gen-secret`)"
        )
    previous = section.string_list("previous_secrets")
    for i, old in enumerate(previous):
        if len(old) < 32:
            section.problems.append(
                f"{section.key_path('previous_secrets')}[{i}]: must be at least 32 characters"
            )
    cookie_name = section.string("cookie_name", "wechat_gateway")
    if not re.fullmatch(r"[A-Za-z0-9_\-]{1,64}", cookie_name):
        section.problem("cookie_name", "must be 1-64 characters of letters, digits, '_' or '-'")
    max_age = section.duration("max_age", 7 * 86400, positive=True, maximum="400d")
    if 0 < max_age < 1:
        section.problem("max_age", "must be at least 1 second")
    cookie_domain = section.string("cookie_domain", "") or None
    if cookie_domain is not None and not HOSTNAME.fullmatch(cookie_domain.lstrip(".").lower()):
        section.problem("cookie_domain", "must be a domain such as .example.com")
    secure = section.boolean("secure", https)
    for problem in _cookie_prefix_problems(
        cookie_name, https=https, secure=secure, domain=cookie_domain
    ):
        section.problem("cookie_name", problem)
    revalidate = section.duration("revalidate", 0.0) or None
    return SessionSettings(
        cookie_domain=cookie_domain,
        revalidate=revalidate,
        secret=secret,
        previous_secrets=previous,
        cookie_name=cookie_name,
        max_age=int(max_age),
        secure=secure,
    )


def _cookie_prefix_problems(
    name: str, *, https: bool, secure: bool, domain: str | None
) -> list[str]:
    """Why browsers would refuse the cookies under ``name``'s prefix (RFC 6265bis 4.1.3).
    The login-state cookie's name starts the same way, so this covers both cookies."""
    prefix = cookie_prefix(name)
    if prefix is None:
        return []
    found = []
    if not https:
        found.append(
            f"a {prefix} name needs an https public_url"
            " (browsers accept such a cookie only from a secure origin)"
        )
    elif not secure:
        found.append(
            f"a {prefix} name needs session.secure: true"
            " (browsers drop such a cookie without the Secure attribute)"
        )
    if prefix == HOST_PREFIX and domain is not None:
        found.append(
            f"a {prefix} name cannot have session.cookie_domain (browsers drop such a cookie"
            f" with a Domain); use {SECURE_PREFIX} to share the session across subdomains"
        )
    return found


def _validate_headers(section: _Section) -> tuple[tuple[str, str], ...]:
    raw = section.raw("headers")
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        section.problem("headers", "must be a mapping of header name to template")
        return ()
    headers: list[tuple[str, str]] = []
    seen: set[str] = set()
    for name, template in raw.items():
        where = f"{section.key_path('headers')}.{name}"
        problem = check_header_name(str(name))
        if problem is None and str(name).lower().replace("_", "-") in seen:
            problem = "set twice (header names ignore case)"
        if problem is not None:
            section.problems.append(f"{where}: {problem}")
            continue
        seen.add(str(name).lower().replace("_", "-"))
        try:
            parse_template(template)
        except ValueError as exc:
            section.problems.append(f"{where}: {exc}")
            continue
        headers.append((str(name), template))
    return tuple(headers)


def _validate_upstreams(top: _Section) -> tuple[UpstreamSettings, ...]:
    raw = top.raw("upstreams")
    if raw is None:
        top.problem("upstreams", "required (at least one upstream)")
        return ()
    if not isinstance(raw, list) or not raw:
        top.problem("upstreams", "must be a list with at least one upstream")
        return ()
    result: list[UpstreamSettings] = []
    seen: set[tuple[str | None, str]] = set()
    for i, item in enumerate(raw):
        section = _Section(item, f"upstreams[{i}]", _UPSTREAM_KEYS, top.problems, top.failed)
        prefix = section.string("prefix", required=True)
        host = section.string("host", "").strip().lower() or None
        if host is not None and not HOSTNAME.fullmatch(host.rsplit(":", 1)[0]):
            section.problem("host", "must be a host name such as app.example.com")
        if prefix and not prefix.startswith("/"):
            section.problem("prefix", "must start with /")
        elif prefix.startswith("/_gateway"):
            section.problem("prefix", "/_gateway/ is reserved for the gateway itself")
        elif (host, prefix) in seen:
            section.problem("prefix", "another upstream already has this prefix (and host)")
        seen.add((host, prefix))
        allow = section.string_list("allow") if section.has("allow") else None
        origins: list[str] = []
        for j, text in enumerate(section.string_list("websocket_origins")):
            normal = origin_url(text)
            if normal is None:
                section.problems.append(
                    f"{section.key_path('websocket_origins')}[{j}]: must be an origin such as"
                    " https://app.example.com (scheme, host and port only)"
                )
            else:
                origins.append(normal)
        url_text = section.string("url", required=True)
        url = http_url(url_text) if url_text else None
        if url_text and url is None:
            section.problem("url", "must be an http or https URL")
        result.append(
            UpstreamSettings(
                prefix=prefix,
                url=url or "",
                timeout=section.duration("timeout", 30.0, positive=True),
                read_timeout=section.duration("read_timeout", 300.0, positive=True),
                host=host,
                strip_prefix=section.boolean("strip_prefix", False),
                public=section.boolean("public", False),
                allow=allow,
                websocket_origins=tuple(origins),
                websocket_idle_timeout=section.duration("websocket_idle_timeout", 3600.0),
                headers=_validate_headers(section),
                audience=section.string("audience", "") or None,
            )
        )
    return tuple(result)
