"""HTTP/1.1 as the gateway reads and writes it on its own sockets.

What lives here: the request target as the client sent it (``target``), the path the
upstream will act on, for policy (``paths``), the strict upstream response reader
(``response``), socket helpers (``sockets``) and the one reading of a URL's origin
(``origins``). What does not: forwarding decisions (``gateway.proxy``); no module here
knows about sessions or upstream configuration.
"""
