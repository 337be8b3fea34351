"""Standings over HTTP: a scope's league, where one region stands, its history, and a live stream."""

import asyncio
import time
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlalchemy import Engine, bindparam, func, or_, select
from sqlmodel import Session

from services.kit import pagination
from services.kit.access import Principal, readmit, require, streaming
from services.kit.problems import MEDIA_TYPE, Problem, field_problem
from services.kit.session import SessionDep
from services.kit.types import IsoDateTime
from services.ranking.models import Region, Standing, StandingHistory
from services.ranking.ranks import ALL

router = APIRouter(tags=["standings"])
Code = Annotated[str, Path(pattern=r"^[0-9]{6}$")]
Year = Annotated[int, Query(ge=2010, le=2100)]
PROBLEM = {"content": {MEDIA_TYPE: {}}}
VERSION_TTL_S = 0.02  # how long a read of the standings' version serves (`Names.history_version`)
Reader = Annotated[Principal, Depends(require("standings:read"))]


def _unknown(code: str) -> Problem:
    return Problem(404, "not-found", "Not found", f"no region {code}")


def _visible_prefix(principal: Principal, region: str) -> str:
    """The LIKE pattern of the rows a key may see in `region`'s standings: all of them inside its
    region; only its own in a scope above it (a prefecture sees where its counties stand in the
    province); 404 for any other region, as if it did not exist."""
    if principal.covers(region):
        return "%"
    if principal.sees(region):
        return principal.region_prefix + "%"
    raise _unknown(region)


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


class Names:
    """Per process: region names and levels (read once; regions change only with a new release)
    and the rendered standings pages."""

    def __init__(self) -> None:
        self.regions: dict[str, tuple[str, str]] = {}
        self.pages: dict[tuple, tuple[int, bytes]] = {}  # rendered standings pages, by history version
        self.version: tuple[float, int] = (-1.0, 0)  # (when read, monotonic; the newest history id)

    def history_version(self, session: Session) -> int:
        """The newest standing-history id, read at most every `VERSION_TTL_S`: the dashboard's
        standings reads are served from the rendered pages with no database round trip between
        (on PostgreSQL each read cost a pool check-out, its ping and the query: 0.17 of hello-world,
        0.37 on SQLite). A change shows at most that much later."""
        read_at, version = self.version
        now = time.monotonic()
        if now - read_at >= VERSION_TTL_S:
            version = session.execute(HISTORY_VERSION).scalar_one()
            self.version = (now, version)
        return version

    def load(self, session: Session) -> None:
        self.regions = {r.code: (r.name, r.level) for r in session.execute(select(Region.code, Region.name,
                                                                                 Region.level)).all()}

    def level(self, session: Session, code: str) -> str:
        if code not in self.regions:
            self.load(session)  # the worker may have cached the regions after the first request
        if code not in self.regions:
            raise Problem(404, "not-found", "Not found", f"no region {code}")
        return self.regions[code][1]

    def ensure(self, session: Session) -> "Names":
        if not self.regions:
            self.load(session)
        return self

    def name(self, code: str) -> str | None:
        entry = self.regions.get(code)
        return entry[0] if entry else None


def _names_of(request: Request) -> Names:
    return request.app.state.names


NamesDep = Annotated[Names, Depends(_names_of)]
STANDING_COLUMNS = (Standing.region_code, Standing.rank, Standing.total, Standing.grade, Standing.previous_rank,
                    Standing.previous_total, Standing.changed_at)
CURRENT = (select(*STANDING_COLUMNS)
           .where(Standing.scope == bindparam("scope"), Standing.level == bindparam("level"),
                  Standing.league == bindparam("league"), Standing.year == bindparam("year"),
                  Standing.region_code.like(bindparam("visible")))
           .order_by(Standing.rank, Standing.region_code).limit(bindparam("limit")))
HISTORY_VERSION = select(func.coalesce(func.max(StandingHistory.id), 0))
CURRENT_AFTER = CURRENT.where(or_(Standing.rank > bindparam("rank"), (Standing.rank == bindparam("rank"))
                                  & (Standing.region_code > bindparam("code"))))
HISTORY_COLUMNS = (StandingHistory.region_code, StandingHistory.rank, StandingHistory.total, StandingHistory.grade,
                   StandingHistory.previous_rank, StandingHistory.previous_total, StandingHistory.at)


@router.get("/v1/standings", response_model=StandingsPage, summary="A league's standings in a region, best first",
            responses={404: {"description": "Unknown region", **PROBLEM},
                       422: {"description": "Bad parameters (each named)", **PROBLEM}})
async def standings(
    request: Request,
    names: NamesDep,
    principal: Reader,
    region: Annotated[str, Query(pattern=r"^[0-9]{6}$", description="A province (its counties or prefectures) or a "
                                 "prefecture (its counties)")],
    year: Year,
    level: Literal["county", "prefecture"] = "county",
    league: Annotated[Literal["in_poverty", "exited", "all"] | None,
                      Query(description="Counties: in_poverty (default) or exited. Prefectures: all.")] = None,
    as_of: Annotated[IsoDateTime | None, Query(description="The standings as they were at this time")] = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> Response:
    """An empty league (no county of it scored yet) is an empty list, not a 404.

    The hot read of the dashboard: an index range on the rank table, rows as tuples, names from
    memory, JSON written directly (the response model documents the shape). It runs on the event
    loop: one indexed read of at most 101 rows costs less than the hops to a worker thread."""
    visible = _visible_prefix(principal, region)
    with Session(request.app.state.engine) as session:
        return _standings(session, names, region, year, level, league, as_of, cursor, limit, visible)


def _standings(session: Session, names: Names, region: str, year: int, level: str, league: str | None,
               as_of: datetime | None, cursor: str | None, limit: int, visible: str) -> Response:
    scope_level = names.level(session, region)
    if scope_level == "county":
        raise field_problem("region", "a county has no standings within it; use /v1/standings/{region_code}")
    if level == "prefecture" and scope_level != "province":
        raise field_problem("level", "prefectures are ranked within their province only")
    league = league or ("in_poverty" if level == "county" else ALL)
    if (level == "county") == (league == ALL):
        raise field_problem("league", "counties: in_poverty or exited; prefectures: all")
    position = pagination.decode(cursor, {"rank": int, "code": str})
    params = {"scope": region, "level": level, "league": league, "year": year, "limit": limit + 1, "visible": visible,
              "rank": position["rank"] if position else 0, "code": position["code"] if position else ""}
    if as_of is None:  # statements built once (no per-request construction), cached compiled
        # every change of a standing writes a history row in the same transaction: the newest
        # history id versions the whole rank table, so an unchanged page is served as rendered
        version = names.history_version(session)
        key = (region, level, league, year, cursor, limit, visible)
        cached = names.pages.get(key)
        if cached is not None and cached[0] == version:
            return Response(cached[1], media_type="application/json")
        rows = session.execute(CURRENT_AFTER if position else CURRENT, params).all()
    else:
        model, columns = StandingHistory, HISTORY_COLUMNS
        latest = (select(func.max(StandingHistory.id)).where(
            StandingHistory.scope == region, StandingHistory.level == level, StandingHistory.league == league,
            StandingHistory.year == year, StandingHistory.at <= as_of).group_by(StandingHistory.region_code))
        q = select(*columns).where(StandingHistory.id.in_(latest), StandingHistory.rank.is_not(None),
                                   StandingHistory.region_code.like(visible))
        if position:
            q = q.where(or_(model.rank > position["rank"],
                            (model.rank == position["rank"]) & (model.region_code > position["code"])))
        rows = session.execute(q.order_by(model.rank, model.region_code).limit(limit + 1)).all()
    more, rows = len(rows) > limit, rows[:limit]
    items = [{"region_code": code, "name": names.name(code), "rank": rank, "total": total, "grade": grade,
              "previous_rank": prev_rank, "previous_total": prev_total,
              "movement": prev_rank - rank if prev_rank is not None else None, "changed_at": at.isoformat()}
             for code, rank, total, grade, prev_rank, prev_total, at in rows]
    page = {"region": region, "level": level, "league": league, "year": year,
            "as_of": as_of.isoformat() if as_of else None, "items": items,
            "next_cursor": pagination.encode({"rank": rows[-1][1], "code": rows[-1][0]}) if more else None}
    body = orjson.dumps(page)
    if as_of is None:
        if len(names.pages) >= 512:
            names.pages.clear()
        names.pages[key] = (version, body)
    return Response(body, media_type="application/json")


def _history_after(engine: Engine, names: Names, after: int, region: str | None, principal: Principal,
                   limit: int = 500) -> list[dict[str, Any]]:
    with Session(engine) as s:
        q = select(StandingHistory).where(StandingHistory.id > after)
        if region:
            q = q.where(or_(StandingHistory.scope == region, StandingHistory.region_code == region))
        rows = s.execute(q.order_by(StandingHistory.id).limit(limit)).scalars().all()
        if rows:
            names.ensure(s)
    # rows outside the key's region are skipped here; the caller still moves past them (`id`)
    return [{**_history(r), "region_code": r.region_code, "name": names.name(r.region_code), "year": r.year,
             "visible": principal.covers(r.region_code)} for r in rows]


def _last_history_id(engine: Engine) -> int:
    with Session(engine) as s:
        return s.execute(select(func.coalesce(func.max(StandingHistory.id), 0))).scalar_one()


async def _still_reading(request: Request, region: str | None) -> Principal:
    """The stream's key, checked again at each poll: 401 once revoked or expired, 403 without its
    scope, 404 once the region is outside it (a key's scopes and region do not change today)."""
    who = await readmit(request, "standings:read")
    if region is not None:
        _visible_prefix(who, region)
    return who


STREAM_READER = require("standings:read", query_token=True)  # one check of the key for both below


def _stream_region(request: Request, names: NamesDep, who: Annotated[Principal, Depends(STREAM_READER)],
                   region: Annotated[str | None, Query(pattern=r"^[0-9]{6}$",
                   description="Only changes within this scope or of this region")] = None) -> str | None:
    """The stream's region, checked before the key takes one of its stream places: an unknown or
    unseen region is a 404, also for a key that holds all its places (not a 429)."""
    if region is not None:
        _visible_prefix(who, region)
        with Session(request.app.state.engine) as s:
            names.level(s, region)  # 404 for an unknown region
    return region


@router.get("/v1/standings/stream", summary="Server-Sent Events: every standing change, as it happens",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "`event: standing`, `id:` (resume with Last-Event-ID), `data:` JSON; "
                                            "once the key is revoked or expires (seen within 5 s), a last "
                                            "`event: end` whose `data:` is the problem a new request would get "
                                            "(401), and the stream closes"},
                       404: {"description": "Unknown region", **PROBLEM},
                       429: {"description": "Over the key's rate limit, or the key already holds "
                                            "`KAOHE_STREAM_MAX_PER_KEY` streams open (default 5) in this API "
                                            "process: `detail` says how many and the limit (Retry-After, "
                                            "RateLimit headers)", **PROBLEM}})
async def stream(request: Request, names: NamesDep, region: Annotated[str | None, Depends(_stream_region)],
                 principal: Annotated[Principal, Depends(streaming(admitted=STREAM_READER))]) -> StreamingResponse:
    """EventSource cannot send headers: this route also takes the key as `?access_token=`.

    A key may hold `stream_max_per_key` streams open at once in each API process (each polls the
    database every `stream_poll_ms`); the place is given back however the stream ends. The region
    is checked first (`_stream_region`): 401/403, then 404, then 429."""
    engine = request.app.state.engine
    header = request.headers.get("last-event-id")
    # from where a reconnecting EventSource left off, else from now
    start = int(header) if header and header.isdigit() else await run_in_threadpool(_last_history_id, engine)
    poll_s = request.app.state.settings.stream_poll_ms / 1000

    async def events():
        after, quiet = start, 0.0
        yield b"retry: 2000\n\n"
        while not await request.is_disconnected():
            try:  # as fresh as a new request's check (the key cache): a revocation ends the stream within 5 s
                who = await _still_reading(request, region)
            except Problem as problem:  # what a reconnecting EventSource would get, then the end
                yield b"event: end\ndata: %s\n\n" % orjson.dumps(problem.body(request.url.path))
                return
            rows = await run_in_threadpool(_history_after, engine, names, after, region, who)
            for row in rows:
                after = row["id"]
                if not row.pop("visible"):
                    continue
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
def placement(region_code: Code, year: Year, session: SessionDep, names: NamesDep,
              principal: Reader) -> list[Placement]:
    if not principal.covers(region_code):
        raise _unknown(region_code)
    names.level(session, region_code)  # 404 for an unknown region
    rows = session.execute(select(Standing).where(Standing.region_code == region_code, Standing.year == year)
                           .order_by(Standing.scope.desc(), Standing.level)).scalars().all()
    out = []
    for r in rows:
        size = session.execute(select(func.count()).select_from(Standing).where(
            Standing.scope == r.scope, Standing.level == r.level, Standing.league == r.league,
            Standing.year == r.year)).scalar_one()
        out.append(Placement(scope=r.scope, scope_name=names.name(r.scope), level=r.level,
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
def history(region_code: Code, year: Year, session: SessionDep, names: NamesDep, principal: Reader,
            since: Annotated[IsoDateTime | None, Query(description="Only changes after this time")] = None
            ) -> list[dict[str, Any]]:
    if not principal.covers(region_code):
        raise _unknown(region_code)
    names.level(session, region_code)  # 404 for an unknown region
    q = select(StandingHistory).where(StandingHistory.region_code == region_code, StandingHistory.year == year)
    if since is not None:
        q = q.where(StandingHistory.at > since)
    return [_history(r) for r in session.execute(q.order_by(StandingHistory.id).limit(5000)).scalars()]


@router.get("/v1/regions", summary="The regions ranking knows inside the key's region, and those above it")
def regions(session: SessionDep, principal: Reader, parent: Annotated[str | None, Query(pattern=r"^[0-9]{6}$")] = None
            ) -> list[dict[str, Any]]:
    q = select(Region)
    if parent:
        q = q.where(Region.parent_code == parent)
    return [{"code": r.code, "name": r.name, "level": r.level, "parent_code": r.parent_code}
            for r in session.execute(q.order_by(Region.code)).scalars() if principal.sees(r.code)]
