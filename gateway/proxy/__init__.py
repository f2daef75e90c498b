"""Forwarding a request to its upstream and streaming the answer back.

What lives here: routing and the per-route policy (``router``), the upstream connection
pool (``pool``), the request head and body sent upstream (``request``) and the exchange
with its streamed answer (``forward``). What does not: who the user is or whether they may
enter (``gateway.auth``); the identity headers arrive ready-made from ``gateway.identity``.
"""
