"""What every service's FastAPI app has: problem+json errors, a body limit, /healthz, /readyz,
/metrics, a request id, counted and logged, on every request, and no query parameter ignored."""

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from services.kit import metrics, problems
from services.kit.access import Access, Idempotency, OpenStreams, RateHeaders, RateLimiter
from services.kit.clean_input import CleanInput
from services.kit.db import ping
from services.kit.kafka import CachedProbe
from services.kit.limits import BodyLimit
from services.kit.observe import ObserveRequests, metrics_router
from services.kit.query import refuse_undeclared
from services.kit.settings import Settings

log = logging.getLogger(__name__)

Check = Callable[[], str | None]  # None = fine, else what is wrong


def health_router(checks: dict[str, Check], info: Callable[[], dict[str, Any]] | None = None) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz", summary="Liveness: the process answers")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", summary="Readiness: the database and the broker are reachable",
                responses={503: {"description": "Not ready (problem+json naming what is down)"}})
    def readyz(request: Request):
        results = {name: check() for name, check in checks.items()}
        body: dict[str, Any] = {"checks": {n: ("ok" if r is None else r) for n, r in results.items()}}
        if info:
            try:
                body.update(info())
            except SQLAlchemyError as exc:
                body["info_error"] = str(exc).splitlines()[0]
        if all(r is None for r in results.values()):
            return {"status": "ready", **body}
        down = ", ".join(n for n, r in results.items() if r is not None)
        problem = problems.Problem(503, "not-ready", "Not ready", f"unreachable: {down}", **body)
        return JSONResponse(problem.body(request.url.path), status_code=503, media_type=problems.MEDIA_TYPE)

    return router


def database_check(engine: Engine) -> Check:
    def check() -> str | None:
        try:
            ping(engine)
            return None
        except SQLAlchemyError as exc:
            return f"database unreachable: {str(exc).splitlines()[0]}"

    return check


def broker_check(settings: Settings) -> Check:
    probe = CachedProbe(settings.bootstrap_servers)

    def check() -> str | None:
        err = probe()
        return None if err is None else f"broker unreachable ({settings.bootstrap_servers}): {err}"

    return check


def _offline_docs(app: FastAPI) -> None:
    """/docs and /redoc with their scripts served by us: the machine may reach no CDN."""
    static = resources.files("fastapi_offline") / "static"
    app.mount("/_docs", StaticFiles(directory=str(static)), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    def swagger() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} — API",
                                   swagger_js_url="/_docs/swagger-ui-bundle.js",
                                   swagger_css_url="/_docs/swagger-ui.css", swagger_favicon_url="/_docs/favicon.png")

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url=app.openapi_url, title=f"{app.title} — API",
                              redoc_js_url="/_docs/redoc.standalone.js", redoc_favicon_url="/_docs/favicon.png",
                              with_google_fonts=False)


def serve(create_app: Callable[[Settings], FastAPI], service: str) -> None:
    """`python -m services.<service>`: the app on the service's port, with uvicorn."""
    import uvicorn

    from services.kit.logs import configure

    configure(service)
    settings = Settings()
    # log_config=None: uvicorn's own lines go through our handler (JSON); ObserveRequests logs requests
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port(service), log_level="warning",
                access_log=False, log_config=None)


PROBLEM_SCHEMA = {
    "type": "object", "required": ["type", "title", "status", "detail"],
    "description": "RFC 9457 problem details; `errors` names every offending field.",
    "properties": {
        "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
        "detail": {"type": "string"}, "instance": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object", "properties": {
            "field": {"type": "string"}, "pointer": {"type": "string"}, "message": {"type": "string"},
            "type": {"type": "string"}}}},
    },
}
STANDARD_PROBLEMS = {
    "401": "No API key, or one unknown, revoked or expired",
    "403": "The key lacks the scope (or the reach over every region) this needs",
    "429": "Over the key's rate limit (Retry-After, RateLimit headers)",
    "503": "The database is unavailable; nothing was changed, retry (Retry-After)",
}
RATE_HEADERS = {
    "RateLimit": {"description": "Remaining quota and seconds until full, e.g. `\"key\";r=99;t=1`",
                  "schema": {"type": "string"}},
    "RateLimit-Policy": {"description": "The key's quota per window, e.g. `\"key\";q=6000;w=60`",
                         "schema": {"type": "string"}},
}


def document_problems(app: FastAPI) -> None:
    """Every error a route can answer, in its OpenAPI operation, as application/problem+json.

    FastAPI documents only what a route declares (and its own 422 as application/json); the key
    check, the rate limit, the body limit and the database add theirs to every route.
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
        problem = {problems.MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
        for path, operations in schema.get("paths", {}).items():
            for method, op in operations.items():
                responses = op.setdefault("responses", {})
                codes = dict(STANDARD_PROBLEMS) if op.get("security") else {}
                # every route: a query parameter it does not declare is refused too (kit.query)
                codes["422"] = "Invalid request: `errors` names every offending field"
                if op.get("requestBody"):
                    codes["413"] = "Body too large"
                    codes["415"] = "The body is not sent as application/json (UTF-8): `errors` names Content-Type"
                    codes["400"] = "A body that cannot be parsed"
                if "{" in path or op.get("security"):
                    codes["404"] = "No such object (or one outside the key's region)"
                if method == "post":
                    codes["409"] = "Idempotency-Key in use by a request still running, or a conflict"
                for code, description in codes.items():
                    responses.setdefault(code, {"description": description})
                for code, response in responses.items():
                    if code[0] in "45":
                        response["content"] = problem  # every error any service sends is problem+json
                    elif op.get("security"):
                        response.setdefault("headers", {}).update(RATE_HEADERS)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi


def _disposing(lifespan: Any, engine: Engine) -> Callable[[FastAPI], AbstractAsyncContextManager]:
    """`lifespan` (or none), then `engine` disposed at shutdown (an app per test left a SQLite
    file's descriptors open: over a thousand by the middle of the suite)."""

    @asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[Any]:
        try:
            if lifespan is None:
                yield None
            else:
                async with lifespan(app) as state:
                    yield state
        finally:
            engine.dispose()

    return run


def service_app(*, title: str, description: str, settings: Settings, version: str = "1.0.0",
                lifespan: Any = None, access: Access | None = None, service: str | None = None) -> FastAPI:
    """A service's app. `access` is the API key store (default: the one the settings place);
    `service` labels its metrics (default: the title's last word, "Kaohe intake" → intake)."""
    if access is None:  # made here, so closed here: its engine's connections go with the app
        access = Access.from_settings(settings)
        lifespan = _disposing(lifespan, access.engine)
    # every route refuses a query parameter it does not declare (kit.query)
    app = FastAPI(title=title, description=description, version=version, lifespan=lifespan,
                  docs_url=None, redoc_url=None, dependencies=[Depends(refuse_undeclared)])
    app.state.access = access
    app.state.rate_limiter = RateLimiter(settings.rate_limit_per_min)
    app.state.open_streams = OpenStreams(settings.stream_max_per_key)
    _offline_docs(app)
    problems.install(app)
    # outermost last: the body limit applies before idempotency reads a body
    app.add_middleware(Idempotency)
    app.add_middleware(RateHeaders)
    app.add_middleware(CleanInput)  # inside the body limit: it reads the (capped) body whole
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    # outermost of all: every answer (a 413, a 429, a 401) gets a request id and is counted
    service = service or title.split()[-1].lower()
    app.add_middleware(ObserveRequests, service=service, log_requests=settings.access_log)
    metrics.OPEN_STREAMS.watch(app.state.open_streams.total, service=service)
    app.include_router(metrics_router())
    document_problems(app)
    return app
