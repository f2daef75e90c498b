"""What the upstream is told about the signed-in user.

What lives here: the identity headers, built only from a session the gateway sealed, and
the rule that strips every client copy of them (``headers``). What does not: reading or
deciding on the session (``gateway.auth``), sending the headers (``gateway.proxy``).
"""
