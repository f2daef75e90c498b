"""End-to-end tests: real processes and real sockets. The gateway runs as ``wechat-gateway
serve`` (gunicorn and all) or forks, in front of upstream servers, the WeChat simulator
and nginx."""
