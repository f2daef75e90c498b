"""Running the gateway: gunicorn embedded in-process, the gevent worker, logs and metrics.

What lives here: ``serve`` (the gunicorn application behind ``wechat-gateway serve``),
``worker`` (the default gevent worker), ``logs`` (the access log and its redaction),
``metrics`` (counters shared by the workers) and ``greenlets`` (the one place that asks
whether the process runs on gevent). What does not: anything about requests; the WSGI
application is ``gateway.app``.
"""
