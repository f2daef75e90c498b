"""``gateway.wsgi:application``: the gateway built from ``$WECHAT_GATEWAY_CONFIG``.

For running under any WSGI server (``gunicorn gateway.wsgi:application``, uWSGI, ...).
``wechat-gateway serve`` does not use this module; it builds the app per worker itself.
"""

from __future__ import annotations

from gateway.builder import build_gateway
from gateway.config import load_settings
from gateway.server.logs import configure_logging

settings = load_settings()
configure_logging(settings.server.log_level, settings.server.log_format)
application = build_gateway(settings)
