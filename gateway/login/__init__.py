"""Signing a browser in and out: the ``/_gateway/login``, ``callback`` and ``logout`` flow.

What lives here: the flow and its login state (``flow``), the callback ledger that lets a
duplicate callback answer like the first (``ledger``), and revalidation of open sessions
(``revalidation``). The flow speaks only to ``gateway.providers.IdentityProvider`` and to
the ``SessionStore``; what WeChat's wire looks like is not its business.
"""
