"""What every service's FastAPI app has: problem+json errors, a body limit, /healthz and /readyz."""

import logging
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from services.kit import problems
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


def service_app(*, title: str, description: str, settings: Settings, version: str = "1.0.0",
                lifespan: Any = None) -> FastAPI:
    app = FastAPI(title=title, description=description, version=version, lifespan=lifespan)
    problems.install(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    return app
