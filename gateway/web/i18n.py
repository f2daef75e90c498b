"""What the gateway's pages say, in English and Chinese, and how a language is chosen.

English error texts live on the error classes themselves (``gateway.errors``): they are
what JSON bodies carry, so a page and an API answer never disagree. This module holds the
Chinese for every error class, keyed by class name, plus the wording of the pages' own
furniture (the sign-in page, the signed-out page, buttons, the language switch).

An error class with no entry here is shown with the entry of its nearest base class that
has one (``error_text`` walks the MRO), so a new subclass is never left untranslated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal
from urllib.parse import unquote_plus

if TYPE_CHECKING:
    from collections.abc import Mapping

    from _typeshed.wsgi import WSGIEnvironment

    from gateway.errors import GatewayError

Lang = Literal["zh", "en"]

#: ``<html lang>`` for each page language.
HTML_LANG: Final[Mapping[Lang, str]] = {"zh": "zh-CN", "en": "en"}

#: ``?lang=`` values, lower-cased with ``_`` read as ``-``; anything else is ignored.
_QUERY_LANGS: Final[Mapping[str, Lang]] = {
    "zh": "zh",
    "cn": "zh",
    "zh-cn": "zh",
    "zh-hans": "zh",
    "zh-hans-cn": "zh",
    "zh-sg": "zh",
    "zh-tw": "zh",
    "zh-hk": "zh",
    "zh-hant": "zh",
    "chinese": "zh",
    "en": "en",
    "en-us": "en",
    "en-gb": "en",
    "english": "en",
}


def negotiate_lang(environ: WSGIEnvironment, default: str = "en") -> Lang:
    """``?lang=`` wins, then ``Accept-Language`` (q-values honoured), then ``default``."""
    for part in environ.get("QUERY_STRING", "").split("&"):
        name, _, value = part.partition("=")
        if unquote_plus(name) == "lang":
            chosen = _QUERY_LANGS.get(unquote_plus(value).strip().lower().replace("_", "-"))
            if chosen is not None:
                return chosen
    best: tuple[float, int, Lang] | None = None
    header = environ.get("HTTP_ACCEPT_LANGUAGE", "")
    for position, item in enumerate(header.split(",")):
        tag, *params = (piece.strip() for piece in item.split(";"))
        lang = _primary(tag)
        if lang is None:
            continue
        quality = _quality(params)
        if quality <= 0:
            continue
        # Highest q first; on a tie, the one listed first.
        if best is None or (quality, -position) > (best[0], -best[1]):
            best = (quality, position, lang)
    if best is not None:
        return best[2]
    return "zh" if default in ("zh", "cn") else "en"


def _primary(tag: str) -> Lang | None:
    primary = tag.lower().replace("_", "-").split("-", 1)[0]
    if primary == "zh":
        return "zh"
    if primary == "en":
        return "en"
    return None


def _quality(params: list[str]) -> float:
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                quality = float(value.strip())
            except ValueError:
                return 0.0
            return quality if 0 <= quality <= 1 else 0.0
    return 1.0


@dataclass(frozen=True, slots=True)
class ErrorText:
    """A page's heading and what to do; ``hint_retry`` is used when the error says when."""

    title: str
    hint: str
    hint_retry: str = ""


#: Chinese for every error class, by class name (English is on the classes).
ERRORS_ZH: Final[Mapping[str, ErrorText]] = {
    "GatewayError": ErrorText("出错了", "请稍后重试。"),
    "BadRequest": ErrorText("请求无效", "请检查地址后重试。"),
    "NotFound": ErrorText("页面不存在", "请检查地址是否正确。"),
    "MethodNotAllowed": ErrorText("不支持的请求方式", "此地址不接受这种请求。"),
    "PayloadTooLarge": ErrorText("请求内容过大", "请减少提交的内容后重试。"),
    "UpgradeRequired": ErrorText("需要升级协议", "请使用第 13 版的实时连接协议。"),
    "CrossSiteWebSocket": ErrorText("禁止访问", "此实时连接由其他网站的页面发起。"),
    "WebSocketUnsupported": ErrorText(
        "不支持此功能", "当前的工作进程类型不支持实时连接，请联系管理员。"
    ),
    "RequestBodyError": ErrorText("请求内容无效", "无法读取请求内容，请重试。"),
    "ClientAborted": ErrorText("请求已中断", "请求内容未发送完整，请重试。"),
    "ClientBodyTimeout": ErrorText("请求超时", "请求内容发送过慢，请重试。"),
    "TooManyRequests": ErrorText(
        "登录尝试过于频繁", "请稍候再登录。", hint_retry="请约 {seconds} 秒后再登录。"
    ),
    "StateUnavailable": ErrorText("服务暂时不可用", "登录网关暂时无法访问会话存储，请稍后重试。"),
    "UpstreamError": ErrorText("应用暂时无法访问", "登录网关后面的应用没有响应，请稍后重试。"),
    "UpstreamUnavailable": ErrorText(
        "应用暂时无法访问", "登录网关后面的应用没有响应，请稍后重试。"
    ),
    "UpstreamTimeout": ErrorText("应用响应超时", "登录网关后面的应用响应时间过长，请稍后重试。"),
    "LoginError": ErrorText("登录失败", "微信登录没有成功，请重试。"),
    "LoginStateInvalid": ErrorText(
        "登录链接无效",
        "这个登录链接已过期、已被使用，或是在另一个浏览器中发起的。请在当前浏览器中重新登录。",
    ),
    "LoginCancelled": ErrorText("已取消登录", "您没有在微信中确认登录。准备好后请重试。"),
    "NotAllowed": ErrorText("无权访问", "您已通过微信登录，但这个微信账号无权使用此应用。"),
    "ProviderFailed": ErrorText("微信登录失败", "微信未能完成登录，请稍后重试。"),
    "ProviderBusy": ErrorText(
        "微信繁忙",
        "微信当前繁忙，请一分钟后重试。",
        hint_retry="微信当前繁忙，请约 {seconds} 秒后重试。",
    ),
    "ProviderTimedOut": ErrorText("微信没有响应", "微信响应超时，请稍后重试。"),
    "SnapshotUser": ErrorText(
        "请打开完整页面登录",
        "微信只提供了您身份的预览。请在微信中点击页面底部的“使用完整服务”，然后确认登录。",
    ),
    "SignInRequired": ErrorText("需要登录", "请先使用微信登录。"),
    "ProviderMisconfigured": ErrorText(
        "登录配置有误", "微信拒绝了此应用的登录配置。您无法自行解决，请告知管理员。"
    ),
    "ProviderUnreachable": ErrorText("无法连接微信", "登录网关暂时无法连接微信，请稍后重试。"),
    "WeComNotAllowed": ErrorText("无权访问", "您已通过企业微信登录，但这个账号无权使用此应用。"),
    "WeComCancelled": ErrorText("已取消登录", "您没有在企业微信中确认登录。准备好后请重试。"),
    "NotAMember": ErrorText(
        "您不是本企业成员", "您使用企业微信登录的身份不属于本企业，只有本企业成员可以使用此应用。"
    ),
    "MemberInactive": ErrorText(
        "您的企业微信账号未启用", "您在企业微信中的账号已被禁用、尚未激活或已离职，请联系管理员。"
    ),
    "OutsideVisibility": ErrorText(
        "此应用对您不可见", "您的企业微信账号不在此应用的可见范围内，请联系管理员将您加入。"
    ),
    "WeComFailed": ErrorText("企业微信登录失败", "企业微信未能完成登录，请稍后重试。"),
    "WeComMisconfigured": ErrorText(
        "登录配置有误", "企业微信拒绝了此应用的登录配置。您无法自行解决，请告知管理员。"
    ),
    "WeComUnreachable": ErrorText("无法连接企业微信", "登录网关暂时无法连接企业微信，请稍后重试。"),
    "WeComBusy": ErrorText(
        "企业微信繁忙",
        "企业微信当前繁忙，请一分钟后重试。",
        hint_retry="企业微信当前繁忙，请约 {seconds} 秒后重试。",
    ),
    "WeComTimedOut": ErrorText("企业微信没有响应", "企业微信响应超时，请稍后重试。"),
}

#: English for an error that says when to retry (the class's own hint is for "later").
_HINT_RETRY_EN: Final[Mapping[str, str]] = {
    "WeComBusy": "WeCom is busy right now. Try again in about {seconds} seconds.",
    "ProviderBusy": "WeChat is busy right now. Try again in about {seconds} seconds.",
    "TooManyRequests": "Too many sign-in attempts from your address. Try again in {seconds} "
    "seconds.",
}

#: Action labels the gateway uses, in Chinese; any other label is shown as given.
_ACTIONS_ZH: Final[Mapping[str, str]] = {
    "Try again": "重试",
    "Sign out": "退出登录",
    "Sign in with another account": "使用其他账号登录",
    "Sign in again": "重新登录",
    "Sign in": "登录",
}

#: The pages' own words.
UI: Final[Mapping[Lang, Mapping[str, str]]] = {
    "en": {
        "error_status": "Error {status}",
        "sign_in": "Sign in",
        "sign_in_intro": "Sign in with WeChat: scan the QR code with WeChat on your phone.",
        "qr_label": "WeChat QR code",
        "qr_frame_title": "WeChat QR code for signing in",
        "qr_failed": "WeChat's QR code could not be loaded here. Use WeChat's own QR page instead.",
        "fallback": "QR code not showing? {link}",
        "fallback_link": "Open WeChat's QR page",
        "choose_intro": "Sign in with WeChat, or with WeCom if you are on the company's staff.",
        "wechat": "WeChat",
        "wechat_intro": "Scan the QR code with WeChat on your phone.",
        "wecom": "WeCom",
        "wecom_intro": "Staff: scan the QR code with WeCom, or sign in from the WeCom app.",
        "wecom_qr_label": "WeCom QR code for signing in",
        "wecom_link": "Open WeCom's sign-in page",
        "noscript": "JavaScript is turned off, so the QR code cannot be shown on this page.",
        "signed_out_heading": "You are signed out",
        "signed_out_message": "Your session with this application has ended.",
        "sign_in_again": "Sign in again",
        "logo": "Logo",
        "language": "Language",
        "switch_label": "中文",
    },
    "zh": {
        "error_status": "错误代码 {status}",
        "sign_in": "登录",
        "sign_in_intro": "使用微信登录：请用手机微信扫描二维码。",
        "qr_label": "微信登录二维码",
        "qr_frame_title": "微信登录二维码",
        "qr_failed": "无法在此处加载微信二维码，请改用微信的二维码页面。",
        "fallback": "二维码没有显示？{link}",
        "fallback_link": "打开微信二维码页面",
        "choose_intro": "请使用微信登录；本企业员工也可以使用企业微信登录。",
        "wechat": "微信",
        "wechat_intro": "请用手机微信扫描二维码。",
        "wecom": "企业微信",
        "wecom_intro": "员工请用企业微信扫描二维码，或在企业微信中打开。",
        "wecom_qr_label": "企业微信登录二维码",
        "wecom_link": "打开企业微信登录页面",
        "noscript": "浏览器已禁用 JavaScript，本页无法显示二维码。",
        "signed_out_heading": "您已退出登录",
        "signed_out_message": "您在此应用的会话已结束。",
        "sign_in_again": "重新登录",
        "logo": "徽标",
        "language": "语言",
        "switch_label": "English",
    },
}


def error_text(error: GatewayError, lang: Lang) -> tuple[str, str]:
    """The heading and hint an error's page shows in ``lang``."""
    retry_after = getattr(error, "retry_after", None)
    seconds = retry_after if isinstance(retry_after, int) and retry_after > 0 else None
    if lang == "en":
        template = next(
            (
                _HINT_RETRY_EN[c.__name__]
                for c in type(error).__mro__
                if c.__name__ in _HINT_RETRY_EN
            ),
            "",
        )
        if seconds is not None and template:
            return error.title, template.format(seconds=seconds)
        return error.title, error.hint
    for cls in type(error).__mro__:
        text = ERRORS_ZH.get(cls.__name__)
        if text is not None:
            if seconds is not None and text.hint_retry:
                return text.title, text.hint_retry.format(seconds=seconds)
            return text.title, text.hint
    return ERRORS_ZH["GatewayError"].title, ERRORS_ZH["GatewayError"].hint


def action_label(label: str, lang: Lang) -> str:
    """A known action label in ``lang``; unknown labels pass through unchanged."""
    return _ACTIONS_ZH.get(label, label) if lang == "zh" else label
