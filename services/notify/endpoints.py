"""Managing endpoints on behalf of an API key: registration, changes, secret rotation, pings,
the delivery log and replays. Service functions: they add and flush; the request commits.

An endpoint belongs to the region of the key that created it; a key sees the endpoints inside
its region and no other (outside it, an endpoint does not exist: 404)."""

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlmodel import Session

from services.kit import pagination
from services.kit.access import Principal
from services.kit.problems import Problem, field_problem
from services.notify import signing, store
from services.notify.delivery import disable
from services.notify.models import Attempt, Delivery, Endpoint, Message
from services.notify.notifications import ping as ping_notification
from services.notify.urls import Refused, check_url


@dataclass(frozen=True, slots=True)
class Rules:
    """What the settings decide for endpoint management."""

    allow_private_urls: bool
    rotation_window: timedelta


def not_found(endpoint_id: str) -> Problem:
    return Problem(404, "not-found", "Not found", f"no webhook endpoint {endpoint_id}")


def _checked_url(url: str, rules: Rules) -> str:
    try:
        return check_url(url, allow_private=rules.allow_private_urls)
    except Refused as exc:
        raise field_problem("url", str(exc)) from exc


def get(session: Session, principal: Principal, endpoint_id: str) -> Endpoint:
    endpoint = session.get(Endpoint, endpoint_id)
    if endpoint is None or not principal.covers(endpoint.region_code):
        raise not_found(endpoint_id)
    return endpoint


def create(*, session: Session, principal: Principal, url: str, description: str, event_types: list[str],
           rules: Rules, now: datetime) -> Endpoint:
    endpoint = Endpoint(id=f"ep_{uuid.uuid4().hex[:24]}", region_code=principal.region, url=_checked_url(url, rules),
                        description=description, event_types=" ".join(dict.fromkeys(event_types)),
                        secret=signing.new_secret(), created_by=principal.key_id, created_at=now, updated_at=now)
    session.add(endpoint)
    session.flush()
    return endpoint


def listing(*, session: Session, principal: Principal, cursor: str | None, limit: int) -> tuple[list[Endpoint],
                                                                                                 str | None]:
    after = pagination.decode(cursor, {"id": str})
    q = select(Endpoint).where(Endpoint.region_code.startswith(principal.region_prefix))
    if after:
        q = q.where(Endpoint.id > after["id"])
    rows = list(session.execute(q.order_by(Endpoint.id).limit(limit + 1)).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, pagination.encode({"id": rows[-1].id}) if more else None


def change(*, session: Session, principal: Principal, endpoint_id: str, changes: dict[str, Any], rules: Rules,
           now: datetime) -> Endpoint:
    """Change url, description or event types; `enabled: true` re-enables a disabled endpoint
    (its failed deliveries stay failed: replay them), `enabled: false` disables it."""
    endpoint = get(session, principal, endpoint_id)
    if changes.get("url") is not None:
        endpoint.url = _checked_url(changes["url"], rules)
    if changes.get("description") is not None:
        endpoint.description = changes["description"]
    if changes.get("event_types") is not None:
        endpoint.event_types = " ".join(dict.fromkeys(changes["event_types"]))
    enabled = changes.get("enabled")
    if enabled is True and endpoint.disabled_at is not None:
        endpoint.disabled_at = endpoint.disabled_reason = endpoint.failing_since = None
    elif enabled is False and endpoint.disabled_at is None:
        disable(session, endpoint.id, now, f"disabled by API key {principal.key_id}")
        session.refresh(endpoint)
    endpoint.updated_at = now
    session.flush()
    return endpoint


def remove(*, session: Session, principal: Principal, endpoint_id: str) -> None:
    """Delete the endpoint with its deliveries and log (the messages stay: other endpoints share them)."""
    endpoint = get(session, principal, endpoint_id)
    session.execute(delete(Attempt).where(Attempt.endpoint_id == endpoint.id))
    session.execute(delete(Delivery).where(Delivery.endpoint_id == endpoint.id))
    session.delete(endpoint)
    session.flush()


def rotate(*, session: Session, principal: Principal, endpoint_id: str, rules: Rules, now: datetime) -> Endpoint:
    """A new secret; the old one still signs deliveries (beside the new one) for the rotation window."""
    endpoint = get(session, principal, endpoint_id)
    endpoint.previous_secret, endpoint.secret = endpoint.secret, signing.new_secret()
    endpoint.previous_secret_expires_at = now + rules.rotation_window
    endpoint.updated_at = now
    session.flush()
    return endpoint


def _enabled(endpoint: Endpoint) -> None:
    if endpoint.disabled_at is not None:
        raise Problem(409, "endpoint-disabled", "Endpoint disabled",
                      f"endpoint {endpoint.id} is disabled ({endpoint.disabled_reason}); "
                      "re-enable it with PATCH {\"enabled\": true} first")


def ping(*, session: Session, principal: Principal, endpoint_id: str, now: datetime) -> str:
    """A `webhook.ping` message for this endpoint, sent like any other; returns its id."""
    endpoint = get(session, principal, endpoint_id)
    _enabled(endpoint)
    return store.record_for(session, ping_notification(endpoint.id, endpoint.region_code, now), endpoint.id, now)


def attempts(*, session: Session, principal: Principal, endpoint_id: str, message_id: str | None,
             cursor: str | None, limit: int) -> tuple[list[Attempt], str | None]:
    """The delivery log, newest first."""
    endpoint = get(session, principal, endpoint_id)
    before = pagination.decode(cursor, {"id": int})
    q = select(Attempt).where(Attempt.endpoint_id == endpoint.id)
    if message_id:
        q = q.where(Attempt.message_id == message_id)
    if before:
        q = q.where(Attempt.id < before["id"])
    rows = list(session.execute(q.order_by(Attempt.id.desc()).limit(limit + 1)).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, pagination.encode({"id": rows[-1].id}) if more else None


def deliveries(*, session: Session, principal: Principal, endpoint_id: str, status: str | None,
               cursor: str | None, limit: int) -> tuple[list[tuple[Delivery, str]], str | None]:
    """The endpoint's messages with their delivery state, newest first."""
    endpoint = get(session, principal, endpoint_id)
    before = pagination.decode(cursor, {"id": int})
    q = (select(Delivery, Message.type).join(Message, Message.id == Delivery.message_id)
         .where(Delivery.endpoint_id == endpoint.id))
    if status:
        q = q.where(Delivery.status == status)
    if before:
        q = q.where(Delivery.id < before["id"])
    rows = [tuple(r) for r in session.execute(q.order_by(Delivery.id.desc()).limit(limit + 1)).all()]
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, pagination.encode({"id": rows[-1][0].id}) if more else None


def replay(*, session: Session, principal: Principal, endpoint_id: str, message_id: str, now: datetime) -> Delivery:
    """Send one message again (same webhook-id), on a fresh retry schedule."""
    endpoint = get(session, principal, endpoint_id)
    _enabled(endpoint)
    delivery = session.execute(select(Delivery).where(Delivery.endpoint_id == endpoint.id,
                                                      Delivery.message_id == message_id)).scalar_one_or_none()
    if delivery is None:
        raise Problem(404, "not-found", "Not found", f"no message {message_id} for endpoint {endpoint.id}")
    if delivery.status != "pending":  # a pending one is on its way already (maybe in flight)
        delivery.status, delivery.tries, delivery.next_attempt_at = "pending", 0, now
        session.flush()
    return delivery


def replay_failed(*, session: Session, principal: Principal, endpoint_id: str, since: datetime,
                  now: datetime) -> int:
    """Send again every message created since `since` whose delivery failed; returns how many."""
    endpoint = get(session, principal, endpoint_id)
    _enabled(endpoint)
    result = session.execute(update(Delivery).where(
        Delivery.endpoint_id == endpoint.id, Delivery.status == "failed", Delivery.created_at >= since)
        .values(status="pending", tries=0, next_attempt_at=now))
    return result.rowcount or 0
