"""``gateway.worker.GatewayWorker``: the class path earlier releases documented for
``gunicorn -k``; the worker lives in ``gateway.server.worker``."""

from gateway.server.worker import GatewayWorker

__all__ = ["GatewayWorker"]
