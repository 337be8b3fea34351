"""POST and read events."""

from collections import Counter
from typing import Annotated, Literal
from uuid import UUID

import orjson
from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse
from pydantic import SkipValidation
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.events.registry import TYPES, Event
from services.intake.api.deps import (
    AcceptingDep,
    CommitterDep,
    DirectoryDep,
    EngineDep,
    EventsReader,
    EventsWriter,
    visible_place,
)
from services.intake.api.schemas import BatchIn, BatchOut, EventPage, RecordPublic
from services.intake.regions.service import not_a_county, region_filter
from services.intake.store import service as store
from services.intake.store.models import StoredEvent
from services.kit import pagination
from services.kit.problems import MEDIA_TYPE, InvalidEvent, Problem
from services.kit.session import SessionDep
from services.kit.types import INT64_MAX, IsoDateTime

REGION_SCOPE = "A county, a prefecture (its counties) or the province"
router = APIRouter(prefix="/v1/events", tags=["events"])
EventType = Literal[TYPES]  # type: ignore[valid-type]

PROBLEM = {"content": {MEDIA_TYPE: {}}}
WRITE_ERRORS = {
    409: {"description": "Same event_id with different content, or a transition the ledger does not "
          "allow (the problem names the current state)", **PROBLEM},
    413: {"description": "Body too large", **PROBLEM},
    422: {"description": "Invalid event: `errors` names every offending field", **PROBLEM},
    503: {"description": "The database is unavailable; nothing was stored, retry (Retry-After)", **PROBLEM},
}


@router.post("", status_code=201, response_model=RecordPublic, summary="Submit one event",
             responses={200: {"description": "Already stored (same event_id, same content): the original record",
                              "model": RecordPublic}, **WRITE_ERRORS})
async def submit(body: Annotated[Event, SkipValidation], committer: CommitterDep, accepting: AcceptingDep,
                 response: Response, principal: EventsWriter) -> dict:
    # documented as the Event union, parsed here with intake's clock (one pass names every fault);
    # async: the route only waits for the group commit (no blocking call in the event loop)
    (event,) = store.parse_items([body], accepting)
    if isinstance(event, InvalidEvent):
        raise event
    if outside(event, principal):
        raise not_here(event)
    (outcome,) = await committer.submit([event])
    if outcome.problem is not None:
        raise outcome.problem
    if outcome.status == "duplicate":
        response.status_code = 200
    response.headers["Location"] = f"/v1/events/{outcome.event_id}"
    return outcome.record


@router.post("/batch", response_model=BatchOut, summary="Submit up to 1,000 events, each judged on its own",
             responses={413: WRITE_ERRORS[413], 422: {"description": "The body itself is malformed", **PROBLEM}})
async def submit_batch(body: BatchIn, committer: CommitterDep, accepting: AcceptingDep,
                       principal: EventsWriter) -> Response:
    items = [not_here(item) if not isinstance(item, InvalidEvent) and outside(item, principal) else item
             for item in store.parse_items(body.events, accepting)]
    outcomes = await committer.submit(items)
    # the answer is BatchOut (the route's response model, in the OpenAPI document), written here as
    # plain JSON: a model per item and the check of the whole cost 1.3 µs an event, this 0.2
    # (measured); tests/intake/test_batch.py holds it to the model
    results = [{"index": i, "event_id": o.event_id, "status": o.status,
                "sequence": o.record["sequence"] if o.record else None,
                "problem": {"errors": None, **o.problem.body()} if o.problem else None}  # (as the model)
               for i, o in enumerate(outcomes)]
    counts = Counter(o.status for o in outcomes)
    return Response(orjson.dumps({"accepted": counts["accepted"], "duplicates": counts["duplicate"],
                                  "rejected": counts["rejected"], "results": results}),
                    media_type="application/json")


def outside(event, principal) -> bool:
    """About a region the key does not cover. Its own province and prefecture, which the key sees,
    are left to the directory (they are no county: a 422 saying which level they are)."""
    return not principal.sees(event.region_code)


def not_here(event) -> InvalidEvent:
    """An event about a region outside the key's region: the 422 of a region that does not exist,
    word for word (README: outside the key's region is as if it did not exist)."""
    return not_a_county(event.region_code, event_id=str(event.event_id))


@router.api_route("/batch", methods=["GET", "PUT", "PATCH", "DELETE"], include_in_schema=False)
def batch_other_methods() -> None:
    """Without this, GET /v1/events/batch would be read as the event with id "batch" (a 422)."""
    raise StarletteHTTPException(405, "Method Not Allowed", headers={"Allow": "POST"})


@router.get("", response_model=EventPage, summary="List stored events, oldest first (inside the key's region)")
def list_events(
    session: SessionDep, directory: DirectoryDep, principal: EventsReader,
    region_code: Annotated[str | None, Query(pattern=r"^[0-9]{6}$", description=REGION_SCOPE)] = None,
    type: EventType | None = None,
    since: Annotated[IsoDateTime | None, Query(description="Only events recorded at or after this time")] = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> EventPage:
    where = [region_filter(StoredEvent.region_code, StoredEvent.prefecture_code,
                           visible_place(directory, principal, region_code))]
    if type:
        where.append(StoredEvent.type == type)
    if since:
        where.append(StoredEvent.recorded_at >= since)
    position = pagination.decode(cursor, {"after": int})
    after = int(position["after"]) if position else 0
    rows = store.page(session=session, where=where, after_sequence=after, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return EventPage(items=[store.record_of(r) for r in rows],
                     next_cursor=pagination.encode({"after": rows[-1].sequence}) if more else None)


@router.get("/export", summary="The whole store as NDJSON, in sequence order (for rebuilding read models)",
            response_class=StreamingResponse,
            responses={200: {"content": {"application/x-ndjson": {}},
                             "description": "One stored record per line, up to the head at the time of the call"}})
def export(engine: EngineDep, directory: DirectoryDep, principal: EventsReader,
           after_sequence: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0) -> StreamingResponse:
    place = visible_place(directory, principal, None)
    where = [region_filter(StoredEvent.region_code, StoredEvent.prefecture_code, place)]
    return StreamingResponse(store.export(engine, after_sequence=after_sequence, where=where),
                             media_type="application/x-ndjson")


@router.get("/{event_id}", response_model=RecordPublic, summary="One stored event",
            responses={404: {"description": "No such event", **PROBLEM}})
def get_event(event_id: UUID, session: SessionDep, principal: EventsReader) -> dict:
    row = store.get(session=session, event_id=event_id)
    if not principal.covers(row.region_code):
        raise Problem(404, "not-found", "Not found", f"no event with event_id {event_id}")
    return store.record_of(row)

