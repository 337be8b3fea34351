"""Scoring's FastAPI app (port 8002). Run with `python -m services.scoring`."""

from fastapi import FastAPI
from sqlalchemy import Engine

from services.kit.access import Access
from services.kit.app import broker_check, database_check, health_router, service_app
from services.kit.db import service_engine
from services.kit.settings import Settings
from services.scoring.api import routes
from services.scoring.store import held_provinces

DESCRIPTION = """Each county's and prefecture's running assessment score for a year, its components
(daily management, inspections, rectification, year-end), and the explanation of every change.
Scores are kept by the scoring worker; this API only reads them."""


def create_app(settings: Settings | None = None, *, engine: Engine | None = None,
               access: Access | None = None) -> FastAPI:
    settings = settings or Settings()
    engine = engine or service_engine(settings, "scoring")
    app = service_app(title="Kaohe scoring", description=DESCRIPTION, settings=settings, access=access)
    app.state.settings, app.state.engine = settings, engine
    app.state.held_provinces = lambda: held_provinces(engine)
    app.include_router(health_router({"database": database_check(engine), "broker": broker_check(settings)}))
    app.include_router(routes.router)
    return app
