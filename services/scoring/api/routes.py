"""Scores, explanations, inspector points and policies over HTTP."""

from datetime import datetime, timezone
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from services.events.v1 import IDENTIFIER
from services.kit import pagination
from services.kit.access import Principal, require
from services.kit.problems import MEDIA_TYPE, Problem
from services.kit.session import SessionDep
from services.kit.types import INT64_MAX
from services.scoring import policy_store, store
from services.scoring.engine.engine import team_detail
from services.scoring.models import RebuildRequest, ScoreRow, TeamPoints, WorkerClock
from services.scoring.policy.model import Policy

router = APIRouter(tags=["scores"])
NOT_FOUND = {404: {"description": "No score for this region and year", "content": {MEDIA_TYPE: {}}}}
Code = Annotated[str, Path(pattern=r"^[0-9]{6}$")]
Year = Annotated[int, Query(ge=2010, le=2100)]
Reader = Annotated[Principal, Depends(require("scores:read"))]
Admin = Annotated[Principal, Depends(require("admin", everywhere=True))]  # policies apply to everyone


class ScorePublic(BaseModel):
    region_code: str
    year: int
    level: str
    parent_code: str
    league: str | None
    total: float
    grade: str
    gated: bool
    components: dict[str, float | None]
    policy_version: str
    cause: str = Field(description="What last moved it: an event id, `deadline` (time passing), `recomputed` "
                                   "(a policy switch or rebuild), or for a prefecture `counties`")
    as_of: str = Field(description="The scoring clock the days overdue were counted at: it moves at each tick "
                                   "(KAOHE_SCORING_TICK_S, 60 s by default), not with each event")


class ExplanationLine(BaseModel):
    component: str
    points: float
    rule: str
    cause: str
    policy_version: str
    at: str


class ExplanationPage(BaseModel):
    region_code: str
    year: int
    items: list[ExplanationLine]
    next_cursor: str | None


PLACES = 4  # decimals shown, as the total is stored (a share of sampled households is a long fraction)


def _public(row: ScoreRow) -> dict[str, Any]:
    components = {c: None if v is None else round(v, PLACES) for c, v in orjson.loads(row.components).items()}
    return {"region_code": row.region_code, "year": row.year, "level": row.level, "parent_code": row.parent_code,
            "league": row.league, "total": row.total, "grade": row.grade, "gated": row.gated,
            "components": components, "policy_version": row.policy_id, "cause": row.cause,
            "as_of": row.as_of.isoformat()}


def _score(session, code: str, year: int, principal: Principal) -> ScoreRow:
    row = session.get(ScoreRow, (code, year)) if principal.covers(code) else None
    if row is None:  # outside the key's region reads exactly like no score at all
        raise Problem(404, "not-found", "Not found", f"no score for region {code} in {year}")
    return row


@router.get("/v1/scores/{region_code}", response_model=ScorePublic, responses=NOT_FOUND,
            summary="A county's or prefecture's current score, with its components")
def get_score(region_code: Code, year: Year, session: SessionDep, principal: Reader) -> dict[str, Any]:
    return _public(_score(session, region_code, year, principal))


@router.get("/v1/scores/{region_code}/explanation", response_model=ExplanationPage, responses=NOT_FOUND,
            summary="Every change of a county's score, line by line, in the order applied")
def explanation(region_code: Code, year: Year, session: SessionDep, principal: Reader, cursor: str | None = None,
                limit: Annotated[int, Query(ge=1, le=500)] = 100) -> ExplanationPage:
    _score(session, region_code, year, principal)
    position = pagination.decode(cursor, {"batch": int, "line": int})
    start = (position["batch"], position["line"]) if position else (0, 0)
    lines = list(store.explanation_lines(session, region_code, year, start=start, limit=limit + 1))
    more = len(lines) > limit
    return ExplanationPage(region_code=region_code, year=year, items=[
        ExplanationLine(component=line.component, points=round(line.points, PLACES), rule=line.rule, cause=line.cause,
                        policy_version=line.policy_id, at=line.at.isoformat()) for _, _, _, line in lines[:limit]],
        next_cursor=pagination.encode({"batch": lines[-1][0][0], "line": lines[-1][0][1]}) if more else None)


@router.get("/v1/scores", response_model=list[ScorePublic],
            summary="Scores of the regions under a prefecture (its counties) or the province (its prefectures), "
            "inside the key's region")
def list_scores(parent: Annotated[str, Query(pattern=r"^[0-9]{6}$")], year: Year, session: SessionDep,
                principal: Reader) -> list:
    rows = session.execute(select(ScoreRow).where(ScoreRow.parent_code == parent, ScoreRow.year == year)
                           .order_by(ScoreRow.region_code)).scalars()
    return [_public(r) for r in rows if principal.covers(r.region_code)]


@router.get("/v1/inspector-points", tags=["inspector points"],
            summary="积分制: +1 per finding upheld or not disputed by its deadline, −2 per unapproved absence "
            "(keys for every region held: teams inspect across prefectures)",
            dependencies=[Depends(require("scores:read", everywhere=True))],
            responses={404: {"description": "Unknown team", "content": {MEDIA_TYPE: {}}}})
def inspector_points(team_id: Annotated[str, Query(min_length=1, max_length=64, pattern=IDENTIFIER)],
                     session: SessionDep) -> dict:
    rows = session.execute(select(TeamPoints).where(TeamPoints.team_id == team_id)).scalars().all()
    if not rows:
        raise Problem(404, "not-found", "Not found", f"no points recorded for team {team_id!r}")
    absences: dict[str, int] = {}
    for row in rows:  # one row per county the team worked in
        for inspector, n in orjson.loads(row.absences).items():
            absences[inspector] = absences.get(inspector, 0) + n
    detail = team_detail(team_id, sum(r.findings_credited for r in rows), absences)
    clock = session.get(WorkerClock, 1)  # the points are the worker's as of its clock (rows change only when moved)
    return {**detail, "as_of": (clock.as_of if clock else max(r.as_of for r in rows)).isoformat()}


@router.get("/v1/policies", tags=["policies"], summary="Every policy version, and which one is active")
def list_policies(request: Request, session: SessionDep, _principal: Reader) -> list[dict[str, Any]]:
    return policy_store.listing(session, request.app.state.settings.scoring_policy)


@router.get("/v1/policies/{policy_id}", tags=["policies"], summary="One policy version, every rule",
            responses={404: {"description": "Unknown policy", "content": {MEDIA_TYPE: {}}}})
def get_policy(policy_id: Annotated[str, Path(max_length=64)], session: SessionDep,
               _principal: Reader) -> dict[str, Any]:
    return policy_store.get(session, policy_id).model_dump(mode="json")


@router.post("/v1/policies", tags=["policies"], status_code=201,
             summary="Add a policy version (validated: weights sum to 1, no negative caps, every enum covered)",
             responses={409: {"description": "That id exists: a change is a new version", "content": {MEDIA_TYPE: {}}},
                        422: {"description": "Invalid policy (every offending field named)",
                              "content": {MEDIA_TYPE: {}}}})
def add_policy(policy: Policy, session: SessionDep, response: Response, _admin: Admin) -> dict[str, Any]:
    policy_store.add(session, policy)
    response.headers["Location"] = f"/v1/policies/{policy.id}"
    return policy.model_dump(mode="json")


@router.post("/v1/policies/{policy_id}/activate", tags=["policies"], status_code=202,
             summary="Make a policy active: the worker recomputes every score from the event history",
             responses={404: {"description": "Unknown policy", "content": {MEDIA_TYPE: {}}}})
def activate_policy(policy_id: Annotated[str, Path(max_length=64)], request: Request,
                    session: SessionDep, _admin: Admin) -> dict[str, Any]:
    policy_store.activate(session, policy_id, request.app.state.settings.scoring_policy)
    return {"active": policy_id, "detail": "every score is recomputed from the event history on the worker's "
            "next clock tick; scores show the policy they were computed with (policy_version)"}


class RebuildPublic(BaseModel):
    id: int
    requested_at: str
    started_at: str | None
    done_at: str | None
    events: int | None = None
    error: str | None = None
    status: str


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _rebuild_public(r: RebuildRequest) -> RebuildPublic:
    status = "failed" if r.error else "done" if r.done_at else "running" if r.started_at else "queued"
    return RebuildPublic(id=r.id, requested_at=_iso(r.requested_at), started_at=_iso(r.started_at),
                         done_at=_iso(r.done_at), events=r.events, error=r.error, status=status)


@router.post("/v1/rebuilds", tags=["rebuilds"], status_code=202, response_model=RebuildPublic,
             summary="Rebuild every score from intake's event store (the worker takes it up within about a second)")
def request_rebuild(session: SessionDep, response: Response, _admin: Admin) -> RebuildPublic:
    row = RebuildRequest(requested_at=datetime.now(timezone.utc))
    session.add(row)
    session.commit()
    response.headers["Location"] = f"/v1/rebuilds/{row.id}"
    return _rebuild_public(row)


@router.get("/v1/rebuilds/{rebuild_id}", tags=["rebuilds"], response_model=RebuildPublic,
            summary="A rebuild request: queued, running, done (with the events replayed) or failed",
            responses={404: {"description": "Unknown rebuild request", "content": {MEDIA_TYPE: {}}}})
def get_rebuild(rebuild_id: Annotated[int, Path(ge=1, le=INT64_MAX)], session: SessionDep,
                _admin: Admin) -> RebuildPublic:
    row = session.get(RebuildRequest, rebuild_id)
    if row is None:
        raise Problem(404, "not-found", "Not found", f"no rebuild request {rebuild_id}")
    return _rebuild_public(row)
