"""Intake's FastAPI app. Run with `python -m services.intake`."""

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

from fastapi import FastAPI
from sqlalchemy import Engine
from sqlmodel import Session

from services.intake.api import audit, contracts, events, ledger, regions
from services.intake.regions.service import Directory
from services.intake.store.committer import GroupCommitter
from services.intake.store.service import unpublished, utcnow
from services.kit.access import Access
from services.kit.access import routes as access_routes
from services.kit.access.principal import NATIONAL
from services.kit.app import broker_check, database_check, health_router, service_app
from services.kit.db import service_engine
from services.kit.settings import Settings

DESCRIPTION = """Accepts field events (inspections, rectifications, disputes, daily checks, year-end
results, status changes, return-risk alerts), keeps them forever in a hash-chained store, keeps
the rectification ledger, and publishes every accepted event to `kaohe.intake.events.v1`.
Every error is `application/problem+json` (RFC 9457)."""


def create_app(settings: Settings | None = None, *, engine: Engine | None = None, access: Access | None = None,
               clock: Callable[[], datetime] = utcnow) -> FastAPI:
    settings = settings or Settings()
    engine = engine or service_engine(settings, "intake")
    directory = Directory(engine)
    committer = GroupCommitter(engine, directory, clock=clock,
                               max_future=timedelta(seconds=settings.max_future_skew_s))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        committer.start()
        try:
            yield
        finally:
            committer.stop()

    app = service_app(title="Kaohe intake", description=DESCRIPTION, settings=settings, lifespan=lifespan,
                      access=access)
    app.state.settings, app.state.engine, app.state.clock = settings, engine, clock
    app.state.directory, app.state.committer = directory, committer
    app.state.held_provinces = directory.provinces
    app.state.known_region = lambda code: code == NATIONAL or directory.get(code) is not None  # for new keys

    def outbox_info() -> dict[str, Any]:  # intake's outbox is its event store (services/intake/relay.py)
        with Session(engine) as s:
            return {"outbox_backlog": unpublished(session=s)}

    app.include_router(health_router({"database": database_check(engine), "broker": broker_check(settings)},
                                     info=outbox_info))
    for module in (events, ledger, regions, audit, contracts):
        app.include_router(module.router)
    app.include_router(access_routes.router)  # API keys are managed here, for every service
    return app
