"""
Redirect Targets
================

After a login or a logout the gateway sends the browser on to the ``rd`` target it came
with. ``rd`` arrives in a URL anyone can craft, so a gateway that follows it blindly is an
open redirect: a phishing page can hand out a real ``https://intranet.example.com`` login
link that lands the freshly signed-in user on ``https://evil.example``. The same goes for
``javascript:`` targets, which run in the gateway's origin.

:class:`RedirectPolicy` decides which targets may go into ``Location``; everything else
falls back to ``/``. A target is honoured when it is

- a path on the gateway's own origin (``/app?x=1#top``), or
- an absolute ``http``/``https`` URL on ``public_url``'s origin (scheme, host and port; the
  host compared case-insensitively, ``:80``/``:443`` read as the scheme's default), or
- an absolute URL on a host the operator explicitly allows, written the way oauth2-proxy's
  ``--whitelist-domain`` does: ``foo.bar`` (that host), ``.bar.foo`` and ``*.bar.foo``
  (that domain and its subdomains; like oauth2-proxy, ``*.`` includes the bare domain),
  each optionally followed by ``:8080`` (that port only) or ``:*`` (any port). Without a
  port only the scheme's default port matches.

Approach
--------

Browsers read a URL with the WHATWG URL parser, which differs from
:func:`urllib.parse.urlsplit` and from most hand-written checks: it strips tabs and
newlines anywhere (``/\\t/evil.com`` becomes ``//evil.com``), trims leading and trailing
spaces and control characters, reads ``\\`` as ``/`` in ``http(s)`` URLs (``/\\evil.com``
is scheme-relative), accepts any number of slashes after ``https:``, lowercases schemes,
maps full-width and ideographic look-alikes in hosts (U+FF0F FULLWIDTH SOLIDUS, U+3002
IDEOGRAPHIC FULL STOP) to ASCII, and resolves ``.``/``..`` segments, which can collapse a
path into ``//host``. Rather than re-implement that parser, this module accepts only a
narrow, canonical subset of URLs on which the WHATWG reading and a plain reading of the
string cannot disagree, and rejects everything else:

- anything but printable ASCII, anywhere: whitespace, C0 controls, DEL and every non-ASCII
  character (so no look-alike can reach a host, and the result is always safe to put in a
  header). A target built from a request's path and query is percent-encoded ASCII
  already, so nothing legitimate is lost;
- ``\\`` anywhere;
- a scheme other than exactly ``http://`` or ``https://`` in lower case, which excludes
  ``javascript:``, ``data:``, ``vbscript:``, ``HTTPS://`` and ``https:host``;
- targets that are neither such a URL nor a path starting with ``/``;
- in the authority: userinfo (``@``), ``%``, IPv6 literals, empty labels and trailing dots,
  and ports that are empty, have leading zeros or are out of range;
- in the path, query and fragment: two slashes with nothing, whitespace, ``.`` or ``..``
  between them (the first of which is ``//host``), and a path ending in ``/.`` or ``/..``.
  This is oauth2-proxy's rule; applying it to the query as well refuses targets such as
  ``/redirect?url=//evil.example`` that would chain into an open redirect of the app
  behind the gateway. As a consequence no dot segment is ever accepted, even one that
  would stay on the origin (``/a/../b``): a browser never sends one, so it was crafted;
- the same in every percent-decoding of the path, query and fragment, so that
  ``/%2F%2Fevil.example``, ``/%5Cevil.example``, ``/%2e%2e//evil`` or ``/%252F%252Fevil``
  cannot become an authority in an upstream that decodes before redirecting. Decoded
  controls and backslashes are refused too, while ``%2F`` between ordinary segments
  (``/projects/group%2Fname``) and encoded UTF-8 stay allowed;
- targets longer than 2048 characters.

A target that passes is returned unchanged, absolute URLs included: they already point at
an origin the policy accepts, and rewriting them would only add a second URL syntax to
reason about. Hosts are compared as strings, so an unusual spelling of an allowed host
(``127.1`` for ``127.0.0.1``) is refused rather than interpreted.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from gateway.http.origins import Origin, parse_origin

_FALLBACK = "/"

#: Longer targets are refused outright: no real page needs one, and it bounds the work.
_MAX_TARGET_LENGTH = 2048

#: The whole target must consist of these: printable ASCII without space.
_printable_ascii = re.compile(r"[\x21-\x7e]*")

#: A lower-case http(s) scheme and ``//``, then the authority up to the first ``/?#``.
_absolute_url = re.compile(r"(?P<scheme>https?)://(?P<authority>[^/?#]*)(?P<rest>.*)")

#: A DNS name or dotted IPv4 address: non-empty labels, no trailing dot.
_hostname = r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*"

#: A port as a browser would serialise it: no leading zeros.
_port = r"0|[1-9][0-9]{0,4}"

_host_and_port = re.compile(rf"(?P<host>{_hostname})(?::(?P<port>{_port}))?")

#: An ``allowed_domains`` entry: ``[.|*.]host[:port|:*]``.
_allowed_domain = re.compile(
    rf"(?P<prefix>\.|\*\.)?(?P<host>{_hostname})(?::(?P<port>{_port}|\*))?"
)

#: Bytes that must not appear in the path, query or fragment, raw or decoded: C0 controls,
#: DEL (both stripped or mangled by browsers and servers) and ``\`` (a ``/`` to browsers).
_forbidden_bytes = re.compile(rb"[\x00-\x1f\x7f\\]")

#: Separators that can collapse into ``//``: ``//``, ``/ /``, ``/./``, ``/../``, and a
#: path ending in a dot segment (before ``?``, ``#`` or the end).
_collapsible = re.compile(rb"/(?:\s*/|\.{1,2}(?:[/?#]|\Z))")


@dataclass(frozen=True)
class _AllowedHost:
    """One parsed ``allowed_domains`` entry."""

    host: str
    include_subdomains: bool
    any_port: bool
    #: The one port allowed; ``None`` for the scheme's default port.
    port: int | None

    def matches(self, origin: Origin) -> bool:
        """Whether a target on ``origin`` is allowed."""
        host = origin.host
        if host != self.host and not (self.include_subdomains and host.endswith("." + self.host)):
            return False
        if self.any_port:
            return True
        return origin.has_default_port if self.port is None else origin.port == self.port


def _parse_allowed_domain(entry: str) -> _AllowedHost:
    match = _allowed_domain.fullmatch(entry.strip().lower())
    if match is None or (match["port"] not in (None, "*") and int(match["port"]) > 65535):
        raise ValueError(
            f"invalid allowed domain {entry!r}: expected host, .domain or *.domain,"
            " optionally followed by :port or :*"
        )
    port = match["port"]
    return _AllowedHost(
        host=match["host"],
        include_subdomains=match["prefix"] is not None,
        any_port=port == "*",
        port=None if port in (None, "*") else int(port),
    )


def _has_unsafe_separators(rest: str) -> bool:
    """Whether the path, query or fragment could collapse into an authority.

    Checks the raw text and every level of percent-decoding until it no longer changes,
    because the app behind the gateway may decode (once, or repeatedly) before it builds a
    redirect of its own. Each decoding that changes anything shortens the text, so the loop
    ends.
    """
    current = rest.encode("ascii")
    while True:
        if _forbidden_bytes.search(current) or _collapsible.search(current):
            return True
        decoded = unquote_to_bytes(current)
        if decoded == current:
            return False
        current = decoded


class RedirectPolicy:
    """Which ``rd`` targets the gateway may redirect a browser to.

    :param public_url: the origin browsers use, e.g. ``https://intranet.example.com``. Its
        path, if any, is ignored.
    :param allowed_domains: further hosts absolute targets may point at, in oauth2-proxy's
        ``--whitelist-domain`` syntax (see the module documentation).
    :raises ValueError: if ``public_url`` is not an http(s) URL with a host, or an
        ``allowed_domains`` entry cannot be parsed.
    """

    __slots__ = ("_allowed", "_origin")

    def __init__(self, public_url: str, allowed_domains: Sequence[str] = ()) -> None:
        origin = parse_origin(public_url.strip())
        if origin is None:
            raise ValueError(f"public_url {public_url!r} is not an http or https origin")
        # An IPv6 host is kept but never matches a target, since targets with IPv6
        # literals are refused; such a gateway honours only same-origin paths.
        self._origin = origin
        self._allowed = tuple(_parse_allowed_domain(entry) for entry in allowed_domains)

    def is_safe(self, rd: str | None) -> bool:
        """Whether ``rd`` may be used as a redirect target as it is."""
        if not isinstance(rd, str) or not rd or len(rd) > _MAX_TARGET_LENGTH:
            return False
        if not _printable_ascii.fullmatch(rd):
            return False
        if rd.startswith("/"):
            return not _has_unsafe_separators(rd)
        match = _absolute_url.fullmatch(rd)
        if match is None or _has_unsafe_separators(match["rest"]):
            return False
        if _host_and_port.fullmatch(match["authority"]) is None:
            return False
        # In this narrow form there is only one reading of the origin, and it is this one.
        origin = parse_origin(rd)
        if origin is None:  # a port above 65535
            return False
        return origin == self._origin or any(allowed.matches(origin) for allowed in self._allowed)

    def safe_target(self, rd: str | None) -> str:
        """``rd`` when it is safe to redirect to, else ``/``.

        The result contains only printable ASCII, so it can go into ``Location`` as it is.
        """
        return rd if rd is not None and self.is_safe(rd) else _FALLBACK
