"""WeChat: its web-login API client, replies and errors, and its identity providers.

``client`` calls WeChat's API (``/sns/oauth2/access_token``, ``/sns/userinfo``, refresh and
auth checks) with its quirks; ``provider`` turns the website app (QR login) and the
Official Account (inside WeChat's browser) into ``IdentityProvider`` implementations.
"""
