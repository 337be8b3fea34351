"""Ranking's FastAPI app (port 8003): the standings API and the dashboard at `/`.
Run with `python -m services.ranking`."""

from datetime import datetime, timezone
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine, func, select
from sqlmodel import Session

from services.kit import metrics
from services.kit.access import Access
from services.kit.app import broker_check, database_check, health_router, service_app
from services.kit.db import service_engine
from services.kit.settings import Settings
from services.ranking.api import dashboard, routes
from services.ranking.models import Standing

STATIC = Path(__file__).parent / "static"
DESCRIPTION = """Standings by region and league: counties within their prefecture and within the
province (in_poverty and exited counties in separate leagues), prefectures within the province;
per assessment year, with movement, history, "as of" queries and a live stream. Kept by the
ranking worker from scoring's score messages; this API only reads them. The dashboard is at `/`."""


def create_app(settings: Settings | None = None, *, engine: Engine | None = None,
               access: Access | None = None) -> FastAPI:
    settings = settings or Settings()
    engine = engine or service_engine(settings, "ranking")
    app = service_app(title="Kaohe ranking", description=DESCRIPTION, settings=settings, access=access)
    app.state.settings, app.state.engine, app.state.names = settings, engine, routes.Names()
    app.include_router(health_router({"database": database_check(engine), "broker": broker_check(settings)}))
    app.include_router(routes.router)
    app.include_router(dashboard.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def index(key: str | None = None, year: str | None = None) -> FileResponse:
        """The page reads `?key=` (the link `make run` prints) and `?year=` itself (static/app.js)."""
        return FileResponse(STATIC / "index.html")

    metrics.NEWEST_STANDING_AGE.watch(newest_standing_age(engine))
    return app


def newest_standing_age(engine: Engine):
    """Seconds since the newest standing changed, read at scrape time (None: no standing yet)."""

    def age() -> float | None:
        with Session(engine) as s:
            newest = s.execute(select(func.max(Standing.changed_at))).scalar_one_or_none()
        return None if newest is None else max(0.0, (datetime.now(timezone.utc) - newest).total_seconds())

    return age
