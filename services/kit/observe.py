"""The APIs' side of the metrics: the middleware that counts and logs every HTTP request, and
`GET /metrics` (`kit.metrics` holds the metrics themselves, for workers too)."""

import logging
import time

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.kit.logs import REQUEST_ID, new_request_id, valid_id
from services.kit.metrics import HTTP_DURATION, HTTP_REQUESTS, QUIET_ROUTES, UNMATCHED

access_log = logging.getLogger("kaohe.access")


def exposition() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


def metrics_router() -> APIRouter:
    """`GET /metrics` (Prometheus text format). Open, like /healthz: Prometheus scrapes without a
    key; keep the path off a public ingress."""
    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    def metrics() -> Response:  # sync: scrape-time gauges read the database (in the thread pool)
        return exposition()

    return router


def route_template(scope: Scope) -> str:
    """The matched route's path template (`/v1/scores/{region_code}`), a mount's prefix, or UNMATCHED."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) and path else UNMATCHED


class ObserveRequests:
    """Outermost middleware of every API: a request id (the caller's `X-Request-ID` if usable, else a
    new one) for the logs and the response header, the HTTP metrics, and one access-log line."""

    def __init__(self, app: ASGIApp, *, service: str, log_requests: bool = True) -> None:
        self.app, self.service, self.log_requests = app, service, log_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = valid_id(Headers(scope=scope).get("x-request-id")) or new_request_id()
        token = REQUEST_ID.set(request_id)
        header = (b"x-request-id", request_id.encode())
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, header]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._record(scope, status, started)  # 500 if it raised before answering
        # not reset on an exception: the error handler outside this middleware logs it with the id
        REQUEST_ID.reset(token)

    def _record(self, scope: Scope, status: int, started: float) -> None:
        elapsed = time.perf_counter() - started
        method, route = scope["method"], route_template(scope)
        labels = (self.service, method, route, str(status))
        HTTP_REQUESTS.labels(*labels).inc()
        HTTP_DURATION.labels(*labels).observe(elapsed)
        if self.log_requests:
            level = logging.DEBUG if route in QUIET_ROUTES else logging.INFO
            if access_log.isEnabledFor(level):
                ms = round(elapsed * 1000, 1)
                access_log.log(level, "%s %s %d %.1fms", method, route, status, ms,
                               extra={"method": method, "route": route, "path": scope["path"], "status": status,
                                      "duration_ms": ms})


__all__ = ["ObserveRequests", "exposition", "metrics_router", "route_template"]
