"""The ASGI layer in front of the app: bearer-token check, request-body limit, request metrics.

A plain ASGI middleware (no per-request task like Starlette's ``BaseHTTPMiddleware``). The token is
compared in constant time and never logged. A body larger than ``serve.max_body_bytes`` is refused
with 413 before the app parses it (by ``Content-Length``, or while reading a chunked body).
"""

from __future__ import annotations

import hmac
import json
import time
from typing import Any

from starlette.routing import Match

from dsgd.serve.metrics import Metrics

#: Paths that need no token: liveness and readiness probes, the OpenAPI docs.
OPEN_PATHS = frozenset({"/health", "/ready", "/docs", "/docs/oauth2-redirect", "/openapi.json"})


async def _respond(send: Any, status: int, body: dict, headers: list | None = None) -> None:
    raw = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": raw})


class Guard:
    """Wraps the FastAPI ``app``: auth, body limit, and per-endpoint counts and latency."""

    def __init__(self, app: Any, *, token: str, max_body: int, metrics: Metrics) -> None:
        self.app, self.max_body, self.metrics = app, max_body, metrics
        self.token = f"Bearer {token}".encode() if token else b""

    def __getattr__(self, name: str) -> Any:  # the wrapped app's attributes (routes, openapi, ...)
        return getattr(self.app, name)

    def _endpoint(self, scope: dict) -> str:
        route = scope.get("route")
        if route is None:
            for r in self.app.router.routes:
                if r.matches(scope)[0] == Match.FULL:
                    route = r
                    break
        return getattr(route, "path", "unmatched")

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = [500]

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self._handle(scope, receive, send_status)
        finally:
            endpoint = self._endpoint(scope)
            self.metrics.requests.labels(endpoint, str(status[0])).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - t0)

    async def _handle(self, scope: dict, receive: Any, send: Any) -> None:
        headers = dict(scope.get("headers") or [])
        if self.token and scope["path"] not in OPEN_PATHS and \
                not hmac.compare_digest(headers.get(b"authorization", b""), self.token):
            await _respond(send, 401, {"error": "missing or wrong bearer token", "parameter": "Authorization"},
                           [(b"www-authenticate", b"Bearer")])
            return
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await _respond(send, 413, self._too_large(int(length)))
            return
        if scope.get("method") in ("POST", "PUT", "PATCH"):
            body, more = b"", True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                body += message.get("body", b"")
                more = message.get("more_body", False)
                if len(body) > self.max_body:
                    await _respond(send, 413, self._too_large(len(body)))
                    return
            sent = [False]

            async def replay() -> dict:
                if not sent[0]:
                    sent[0] = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await self.app(scope, replay, send)
            return
        await self.app(scope, receive, send)

    def _too_large(self, n: int) -> dict:
        return {"error": f"request body of {n} bytes is over the limit of {self.max_body} (serve.max_body_bytes)",
                "parameter": "body"}
