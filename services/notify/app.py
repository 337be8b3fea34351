"""Notify's FastAPI app (port 8004): prefectures manage their webhook endpoints here.
Run with `python -m services.notify`; the notify worker consumes the topics and delivers."""

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from fastapi import FastAPI
from sqlalchemy import Engine

from services.kit.access import Access
from services.kit.app import database_check, health_router, service_app
from services.kit.db import service_engine
from services.kit.settings import Settings
from services.notify.api import routes
from services.notify.endpoints import Rules

DESCRIPTION = """Signed webhooks to prefectures (Standard Webhooks): a critical finding recorded, a
rectification deadline passed, a rank moved, a score crossing a grade band. Register an endpoint
with a key holding `webhooks:manage`; it is told about the key's region. Every delivery carries
`webhook-id`, `webhook-timestamp` and `webhook-signature`; only a 2xx counts, failures are retried
on a schedule, every attempt is logged, and messages can be replayed. See docs/notify.md."""


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def create_app(settings: Settings | None = None, *, engine: Engine | None = None, access: Access | None = None,
               clock: Callable[[], datetime] = utcnow) -> FastAPI:
    settings = settings or Settings()
    engine = engine or service_engine(settings, "notify")
    app = service_app(title="Kaohe notify", description=DESCRIPTION, settings=settings, access=access)
    app.state.settings, app.state.engine, app.state.clock = settings, engine, clock
    app.state.rules = Rules(allow_private_urls=settings.notify_allow_private_urls,
                            rotation_window=timedelta(seconds=settings.notify_rotation_window_s))
    app.include_router(health_router({"database": database_check(engine)}))
    app.include_router(routes.router)
    return app
