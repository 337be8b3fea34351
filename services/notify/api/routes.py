"""Webhook endpoints over HTTP: register, change, rotate the secret, ping, read the delivery
log, replay. Every route needs an API key with `webhooks:manage`; endpoints outside the key's
region do not exist for it (404)."""

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from services.kit.access import Principal, ShownOnce, require
from services.kit.access.idempotency import REPLAY_HEADERS
from services.kit.problems import MEDIA_TYPE
from services.kit.session import SessionDep
from services.notify import endpoints
from services.notify.api.schemas import (
    AttemptPublic,
    AttemptsPage,
    DeliveriesPage,
    DeliveryPublic,
    EndpointCreate,
    EndpointCreated,
    EndpointPublic,
    EndpointsPage,
    EndpointUpdate,
    MessageQueued,
    NotificationType,
    Replayed,
    ReplayFailed,
    SecretRotated,
)
from services.notify.notifications import SUBSCRIBABLE, TYPES

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
PrincipalDep = Annotated[Principal, Depends(require("webhooks:manage"))]
ID = r"^[A-Za-z0-9_\-]{1,40}$"
EndpointId = Annotated[str, Path(pattern=ID)]
MessageId = Annotated[str, Path(pattern=ID)]
Limit = Annotated[int, Query(ge=1, le=100)]
PROBLEM = {"content": {MEDIA_TYPE: {}}}
NOT_FOUND = {404: {"description": "No such endpoint in the key's region", **PROBLEM}}
DISABLED = {409: {"description": "The endpoint is disabled", **PROBLEM}}
INVALID = {422: {"description": "Invalid request (each field named)", **PROBLEM}}
SECRET_SHOWN_ONCE = [Depends(ShownOnce("secret"))]  # an Idempotency-Key replay answers with "secret": null


def _rules(request: Request) -> endpoints.Rules:
    return request.app.state.rules


def _now(request: Request) -> datetime:
    clock: Callable[[], datetime] = request.app.state.clock
    return clock()


RulesDep = Annotated[endpoints.Rules, Depends(_rules)]
NowDep = Annotated[datetime, Depends(_now)]


@router.get("/event-types", response_model=list[NotificationType],
            summary="The notification types, and which an endpoint may subscribe to")
def event_types(principal: PrincipalDep) -> list[NotificationType]:
    return [NotificationType(type=t, description=d, subscribable=t in SUBSCRIBABLE) for t, d in TYPES.items()]


@router.post("/endpoints", status_code=201, response_model=EndpointCreated, summary="Register an endpoint",
             dependencies=SECRET_SHOWN_ONCE,
             responses={201: {"description": "The endpoint and its signing secret", "headers": REPLAY_HEADERS},
                        **INVALID})
def create_endpoint(body: EndpointCreate, principal: PrincipalDep, session: SessionDep, rules: RulesDep,
                    now: NowDep) -> EndpointCreated:
    """The endpoint receives the chosen notification types about the key's region. The response
    holds the signing secret; it is not shown again (rotate it to get a new one).

    Retrying with the same `Idempotency-Key` registers no second endpoint: it answers 201 with the
    first one's fields and `"secret": null`, with `Idempotent-Replayed: true` and
    `Idempotent-Redacted: secret` (the secret is not kept for replays). Lost it? Rotate it.
    """
    e = endpoints.create(session=session, principal=principal, url=body.url, description=body.description,
                         event_types=body.event_types, rules=rules, now=now)
    return EndpointCreated(**EndpointPublic.of(e).model_dump(), secret=e.secret)


@router.get("/endpoints", response_model=EndpointsPage, summary="The endpoints in the key's region",
            responses=INVALID)
def list_endpoints(principal: PrincipalDep, session: SessionDep, cursor: str | None = None,
                   limit: Limit = 50) -> EndpointsPage:
    rows, next_cursor = endpoints.listing(session=session, principal=principal, cursor=cursor, limit=limit)
    return EndpointsPage(items=[EndpointPublic.of(e) for e in rows], next_cursor=next_cursor)


@router.get("/endpoints/{endpoint_id}", response_model=EndpointPublic, summary="One endpoint",
            responses=NOT_FOUND)
def get_endpoint(endpoint_id: EndpointId, principal: PrincipalDep, session: SessionDep) -> EndpointPublic:
    return EndpointPublic.of(endpoints.get(session, principal, endpoint_id))


@router.patch("/endpoints/{endpoint_id}", response_model=EndpointPublic, summary="Change or re-enable an endpoint",
              responses={**NOT_FOUND, **INVALID})
def update_endpoint(endpoint_id: EndpointId, body: EndpointUpdate, principal: PrincipalDep, session: SessionDep,
                    rules: RulesDep, now: NowDep) -> EndpointPublic:
    e = endpoints.change(session=session, principal=principal, endpoint_id=endpoint_id,
                         changes=body.model_dump(exclude_unset=True), rules=rules, now=now)
    return EndpointPublic.of(e)


@router.delete("/endpoints/{endpoint_id}", status_code=204, summary="Delete an endpoint and its log",
               responses=NOT_FOUND)
def delete_endpoint(endpoint_id: EndpointId, principal: PrincipalDep, session: SessionDep) -> Response:
    endpoints.remove(session=session, principal=principal, endpoint_id=endpoint_id)
    return Response(status_code=204)


@router.post("/endpoints/{endpoint_id}/rotate-secret", response_model=SecretRotated, summary="Rotate the secret",
             dependencies=SECRET_SHOWN_ONCE,
             responses={200: {"description": "The new secret", "headers": REPLAY_HEADERS}, **NOT_FOUND})
def rotate_secret(endpoint_id: EndpointId, principal: PrincipalDep, session: SessionDep, rules: RulesDep,
                  now: NowDep) -> SecretRotated:
    """During the rotation window every delivery carries two signatures (new and old secret),
    so the receiver can switch to the new secret at its own pace.

    Retrying with the same `Idempotency-Key` rotates no second time: it answers with `"secret":
    null`, `Idempotent-Replayed: true` and `Idempotent-Redacted: secret`. Lost it? Rotate again.
    """
    e = endpoints.rotate(session=session, principal=principal, endpoint_id=endpoint_id, rules=rules, now=now)
    return SecretRotated(endpoint_id=e.id, secret=e.secret, previous_secret_expires_at=e.previous_secret_expires_at)


@router.post("/endpoints/{endpoint_id}/ping", status_code=202, response_model=MessageQueued,
             summary="Send a test message", responses={**NOT_FOUND, **DISABLED})
def ping(endpoint_id: EndpointId, principal: PrincipalDep, session: SessionDep, now: NowDep) -> MessageQueued:
    """A `webhook.ping` message, delivered (signed, retried, logged) like any notification."""
    message_id = endpoints.ping(session=session, principal=principal, endpoint_id=endpoint_id, now=now)
    return MessageQueued(endpoint_id=endpoint_id, message_id=message_id, status="pending")


@router.get("/endpoints/{endpoint_id}/attempts", response_model=AttemptsPage,
            summary="The delivery log: every attempt, newest first", responses={**NOT_FOUND, **INVALID})
def list_attempts(endpoint_id: EndpointId, principal: PrincipalDep, session: SessionDep,
                  message_id: Annotated[str | None, Query(pattern=ID)] = None, cursor: str | None = None,
                  limit: Limit = 50) -> AttemptsPage:
    rows, next_cursor = endpoints.attempts(session=session, principal=principal, endpoint_id=endpoint_id,
                                           message_id=message_id, cursor=cursor, limit=limit)
    return AttemptsPage(items=[AttemptPublic.of(a) for a in rows], next_cursor=next_cursor)


@router.get("/endpoints/{endpoint_id}/messages", response_model=DeliveriesPage,
            summary="The endpoint's messages and their delivery state, newest first",
            responses={**NOT_FOUND, **INVALID})
def list_messages(endpoint_id: EndpointId, principal: PrincipalDep, session: SessionDep,
                  status: Literal["pending", "delivered", "failed"] | None = None, cursor: str | None = None,
                  limit: Limit = 50) -> DeliveriesPage:
    rows, next_cursor = endpoints.deliveries(session=session, principal=principal, endpoint_id=endpoint_id,
                                             status=status, cursor=cursor, limit=limit)
    return DeliveriesPage(items=[DeliveryPublic.of(d, t) for d, t in rows], next_cursor=next_cursor)


@router.post("/endpoints/{endpoint_id}/messages/{message_id}/replay", status_code=202, response_model=MessageQueued,
             summary="Send one message again", responses={**NOT_FOUND, **DISABLED})
def replay_message(endpoint_id: EndpointId, message_id: MessageId, principal: PrincipalDep, session: SessionDep,
                   now: NowDep) -> MessageQueued:
    """The same message (same webhook-id) on a fresh retry schedule, sent at once. A message still
    `pending` keeps its schedule (it may be in flight; `next_attempt_at` says when the next try is):
    the answer says `pending` and nothing else changes."""
    d = endpoints.replay(session=session, principal=principal, endpoint_id=endpoint_id, message_id=message_id,
                         now=now)
    return MessageQueued(endpoint_id=endpoint_id, message_id=d.message_id, status=d.status)


@router.post("/endpoints/{endpoint_id}/replay-failed", status_code=202, response_model=Replayed,
             summary="Send again every failed message since a time", responses={**NOT_FOUND, **DISABLED, **INVALID})
def replay_failed(endpoint_id: EndpointId, body: ReplayFailed, principal: PrincipalDep, session: SessionDep,
                  now: NowDep) -> Replayed:
    n = endpoints.replay_failed(session=session, principal=principal, endpoint_id=endpoint_id, since=body.since,
                                now=now)
    return Replayed(endpoint_id=endpoint_id, replayed=n)


__all__ = ["router"]
