"""Standings over HTTP: a scope's league, where one region stands, its history, and a live stream."""

import asyncio
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import AwareDatetime, BaseModel
from sqlalchemy import Engine, func, or_, select
from sqlmodel import Session

from services.kit import pagination
from services.kit.db import SessionDep
from services.kit.problems import MEDIA_TYPE, Problem, field_problem
from services.ranking.models import Region, Standing, StandingHistory
from services.ranking.ranks import ALL

router = APIRouter(tags=["standings"])
Code = Annotated[str, Path(pattern=r"^\d{6}$")]
Year = Annotated[int, Query(ge=2010, le=2100)]
PROBLEM = {"content": {MEDIA_TYPE: {}}}


class StandingPublic(BaseModel):
    region_code: str
    name: str | None
    rank: int
    total: float
    grade: str
    previous_rank: int | None
    previous_total: float | None
    movement: int | None
    changed_at: str


class StandingsPage(BaseModel):
    region: str
    level: str
    league: str
    year: int
    as_of: str | None
    items: list[StandingPublic]
    next_cursor: str | None


class Placement(BaseModel):
    scope: str
    scope_name: str | None
    level: str
    league: str
    rank: int
    of: int
    total: float
    grade: str
    previous_rank: int | None
    movement: int | None
    changed_at: str


class HistoryLine(BaseModel):
    id: int
    scope: str
    level: str
    league: str
    rank: int | None
    total: float | None
    grade: str | None
    previous_rank: int | None
    previous_total: float | None
    at: str


def _region(session: Session, code: str) -> Region:
    region = session.get(Region, code)
    if region is None:
        raise Problem(404, "not-found", "Not found", f"no region {code}")
    return region


def _names(session: Session, codes: list[str]) -> dict[str, str]:
    if not codes:
        return {}
    return dict(session.execute(select(Region.code, Region.name).where(Region.code.in_(codes))).all())


@router.get("/v1/standings", response_model=StandingsPage, summary="A league's standings in a region, best first",
            responses={404: {"description": "Unknown region", **PROBLEM},
                       422: {"description": "Bad parameters (each named)", **PROBLEM}})
def standings(
    session: SessionDep,
    region: Annotated[str, Query(pattern=r"^\d{6}$", description="A province (its counties or prefectures) or a "
                                 "prefecture (its counties)")],
    year: Year,
    level: Literal["county", "prefecture"] = "county",
    league: Annotated[Literal["in_poverty", "exited", "all"] | None,
                      Query(description="Counties: in_poverty (default) or exited. Prefectures: all.")] = None,
    as_of: Annotated[AwareDatetime | None, Query(description="The standings as they were at this time")] = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> StandingsPage:
    """An empty league (no county of it scored yet) is an empty list, not a 404."""
    scope = _region(session, region)
    if scope.level == "county":
        raise field_problem("region", "a county has no standings within it; use /v1/standings/{region_code}")
    if level == "prefecture" and scope.level != "province":
        raise field_problem("level", "prefectures are ranked within their province only")
    league = league or ("in_poverty" if level == "county" else ALL)
    if (level == "county") == (league == ALL):
        raise field_problem("league", "counties: in_poverty or exited; prefectures: all")
    position = pagination.decode(cursor, ("rank", "code"))
    if as_of is None:
        q = select(Standing).where(Standing.scope == region, Standing.level == level, Standing.league == league,
                                   Standing.year == year)
        model = Standing
    else:
        latest = (select(func.max(StandingHistory.id)).where(
            StandingHistory.scope == region, StandingHistory.level == level, StandingHistory.league == league,
            StandingHistory.year == year, StandingHistory.at <= as_of).group_by(StandingHistory.region_code))
        q = select(StandingHistory).where(StandingHistory.id.in_(latest), StandingHistory.rank.is_not(None))
        model = StandingHistory
    if position:
        q = q.where(or_(model.rank > position["rank"],
                        (model.rank == position["rank"]) & (model.region_code > position["code"])))
    rows = list(session.execute(q.order_by(model.rank, model.region_code).limit(limit + 1)).scalars())
    more, rows = len(rows) > limit, rows[:limit]
    names = _names(session, [r.region_code for r in rows])
    items = [StandingPublic(
        region_code=r.region_code, name=names.get(r.region_code), rank=r.rank, total=r.total, grade=r.grade,
        previous_rank=r.previous_rank, previous_total=r.previous_total,
        movement=(r.previous_rank - r.rank) if r.previous_rank is not None else None,
        changed_at=(r.changed_at if model is Standing else r.at).isoformat()) for r in rows]
    return StandingsPage(region=region, level=level, league=league, year=year,
                         as_of=as_of.isoformat() if as_of else None, items=items,
                         next_cursor=pagination.encode({"rank": rows[-1].rank, "code": rows[-1].region_code})
                         if more else None)


def _history_after(engine: Engine, after: int, region: str | None, limit: int = 500) -> list[dict[str, Any]]:
    with Session(engine) as s:
        q = select(StandingHistory).where(StandingHistory.id > after)
        if region:
            q = q.where(or_(StandingHistory.scope == region, StandingHistory.region_code == region))
        rows = s.execute(q.order_by(StandingHistory.id).limit(limit)).scalars().all()
        names = _names(s, sorted({r.region_code for r in rows}))
    return [{**_history(r), "region_code": r.region_code, "name": names.get(r.region_code), "year": r.year}
            for r in rows]


def _last_history_id(engine: Engine) -> int:
    with Session(engine) as s:
        return s.execute(select(func.coalesce(func.max(StandingHistory.id), 0))).scalar_one()


@router.get("/v1/standings/stream", summary="Server-Sent Events: every standing change, as it happens",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "`event: standing`, `id:` (resume with Last-Event-ID), `data:` JSON"},
                       404: {"description": "Unknown region", **PROBLEM}})
async def stream(request: Request, region: Annotated[str | None, Query(pattern=r"^\d{6}$",
                 description="Only changes within this scope or of this region")] = None) -> StreamingResponse:
    engine = request.app.state.engine
    if region is not None:
        with Session(engine) as s:
            _region(s, region)
    header = request.headers.get("last-event-id")
    # from where a reconnecting EventSource left off, else from now
    start = int(header) if header and header.isdigit() else await run_in_threadpool(_last_history_id, engine)
    poll_s = request.app.state.settings.stream_poll_ms / 1000

    async def events():
        after, quiet = start, 0.0
        yield b"retry: 2000\n\n"
        while not await request.is_disconnected():
            rows = await run_in_threadpool(_history_after, engine, after, region)
            for row in rows:
                after = row["id"]
                yield b"event: standing\nid: %d\ndata: %s\n\n" % (row["id"], orjson.dumps(row))
            if rows:
                quiet = 0.0
                continue
            quiet += poll_s
            if quiet >= 15:  # a comment keeps proxies from closing an idle stream
                quiet = 0.0
                yield b": keep-alive\n\n"
            await asyncio.sleep(poll_s)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/v1/standings/{region_code}", response_model=list[Placement],
            summary="Where a region stands in every scope it belongs to",
            responses={404: {"description": "Unknown region", **PROBLEM}})
def placement(region_code: Code, year: Year, session: SessionDep) -> list[Placement]:
    _region(session, region_code)
    rows = session.execute(select(Standing).where(Standing.region_code == region_code, Standing.year == year)
                           .order_by(Standing.scope.desc(), Standing.level)).scalars().all()
    out = []
    for r in rows:
        size = session.execute(select(func.count()).select_from(Standing).where(
            Standing.scope == r.scope, Standing.level == r.level, Standing.league == r.league,
            Standing.year == r.year)).scalar_one()
        out.append(Placement(scope=r.scope, scope_name=_names(session, [r.scope]).get(r.scope), level=r.level,
                             league=r.league, rank=r.rank, of=size, total=r.total, grade=r.grade,
                             previous_rank=r.previous_rank, movement=r.movement, changed_at=r.changed_at.isoformat()))
    return out


def _history(r: StandingHistory) -> dict[str, Any]:
    return {"id": r.id, "scope": r.scope, "level": r.level, "league": r.league, "rank": r.rank, "total": r.total,
            "grade": r.grade, "previous_rank": r.previous_rank, "previous_total": r.previous_total,
            "at": r.at.isoformat()}


@router.get("/v1/standings/{region_code}/history", response_model=list[HistoryLine],
            summary="Every change of a region's standings in a year, oldest first (rank null: left the scope)",
            responses={404: {"description": "Unknown region", **PROBLEM}})
def history(region_code: Code, year: Year, session: SessionDep,
            since: Annotated[datetime | None, Query(description="Only changes after this time")] = None
            ) -> list[dict[str, Any]]:
    _region(session, region_code)
    q = select(StandingHistory).where(StandingHistory.region_code == region_code, StandingHistory.year == year)
    if since is not None:
        q = q.where(StandingHistory.at > since)
    return [_history(r) for r in session.execute(q.order_by(StandingHistory.id).limit(5000)).scalars()]


@router.get("/v1/regions", summary="The regions ranking knows (names for the dashboard)")
def regions(session: SessionDep, parent: Annotated[str | None, Query(pattern=r"^\d{6}$")] = None
            ) -> list[dict[str, Any]]:
    q = select(Region)
    if parent:
        q = q.where(Region.parent_code == parent)
    return [{"code": r.code, "name": r.name, "level": r.level, "parent_code": r.parent_code}
            for r in session.execute(q.order_by(Region.code)).scalars()]
