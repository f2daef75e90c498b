"""Identity providers: the services a user signs in with.

What lives here: the ``IdentityProvider`` swap point (``base``) and its implementations,
each in a subpackage that alone knows its service's wire (``wechat``: the website QR login
and the Official Account flow inside WeChat's own browser). What does not: login state,
cookies or sessions (``gateway.login``, ``gateway.auth``).
"""
