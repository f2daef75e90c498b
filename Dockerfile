# wechat-gateway as a container, typically a sidecar in front of an app on 127.0.0.1.
#
#   docker build -t wechat-gateway .
#   docker run --rm -p 8000:8000 \
#     -v "$PWD/gateway.yaml:/etc/wechat-gateway/gateway.yaml:ro" \
#     -v wechat-gateway-state:/var/lib/wechat-gateway \
#     -e WECHAT_APP_SECRET -e GATEWAY_SESSION_SECRET \
#     wechat-gateway
#
# Config: a file mounted at $WECHAT_GATEWAY_CONFIG; secrets: environment variables that the
# file refers to as ${VAR}. `docker run ... wechat-gateway check-config` validates it.

# --- build: a wheel of the package, so the final image holds no source tree ------------
FROM python:3.11-slim AS build
WORKDIR /src
COPY setup.py pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# --- run -------------------------------------------------------------------------------
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    WECHAT_GATEWAY_CONFIG=/etc/wechat-gateway/gateway.yaml \
    XDG_STATE_HOME=/var/lib

COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl \
 && rm -rf /wheels \
 && groupadd --system --gid 10001 wechat-gateway \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin wechat-gateway \
 && mkdir -p /etc/wechat-gateway /var/lib/wechat-gateway \
 && chown 10001:10001 /var/lib/wechat-gateway

# The embedded state store (revocations, the session index, used login states):
# /var/lib/wechat-gateway/state.db unless state.url says otherwise. Keep it on a volume so
# that revocations survive a new container.
VOLUME /var/lib/wechat-gateway

USER 10001:10001
EXPOSE 8000

# slim has no curl: ask Python. No proxy from the environment for a loopback probe.
# Assumes the default server.bind port 8000.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:8000/_gateway/healthz', timeout=4)"]

# gunicorn stops gracefully on SIGTERM: it stops accepting and lets in-flight requests
# finish for up to server.graceful_timeout (default 30s). Docker's own stop timeout is 10s,
# so use `docker stop -t 35` (or stop_grace_period in Compose) to let that happen.
STOPSIGNAL SIGTERM

ENTRYPOINT ["wechat-gateway"]
CMD ["serve"]
