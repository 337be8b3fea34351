"""What every service's FastAPI app has: problem+json errors, a body limit, /healthz and /readyz."""

import logging
from collections.abc import Callable
from importlib import resources
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from services.kit import problems
from services.kit.access import Access, Idempotency, RateHeaders, RateLimiter
from services.kit.db import ping
from services.kit.kafka import CachedProbe
from services.kit.limits import BodyLimit
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

    configure()
    settings = Settings()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port(service), log_level="warning",
                access_log=False)


def service_app(*, title: str, description: str, settings: Settings, version: str = "1.0.0",
                lifespan: Any = None, access: Access | None = None) -> FastAPI:
    """A service's app. `access` is the API key store (default: the one the settings place)."""
    app = FastAPI(title=title, description=description, version=version, lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    app.state.access = access or Access.from_settings(settings)
    app.state.rate_limiter = RateLimiter(settings.rate_limit_per_min)
    _offline_docs(app)
    problems.install(app)
    # outermost last: the body limit applies before idempotency reads a body
    app.add_middleware(Idempotency)
    app.add_middleware(RateHeaders)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    return app
