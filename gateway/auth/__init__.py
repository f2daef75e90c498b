"""Who is asking and whether they may: sessions, cookies, access and redirect policy.

What lives here: ``Session`` and the ``SessionStore`` swap point with its cookie store and
codec (``session``, ``store``), reading and writing the gateway's cookies (``cookies``),
allow lists, public and API paths, preflights and trusted proxies (``access``), which
redirect targets are safe (``redirects``) and the access decision itself (``decision``).
What does not: how a session comes to be (``gateway.login``), what the upstream is told
about it (``gateway.identity``).
"""
