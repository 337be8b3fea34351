"""Request and response shapes of the webhooks API."""

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from services.kit.types import IsoDateTime
from services.notify.models import Attempt, Delivery, Endpoint
from services.notify.notifications import SUBSCRIBABLE

EventType = Literal[SUBSCRIBABLE]  # type: ignore[valid-type]
NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"  # a NUL cannot be stored in PostgreSQL text; no URL needs one
Url = Annotated[str, StringConstraints(min_length=1, max_length=2048, strip_whitespace=True, pattern=NO_CONTROL)]
Description = Annotated[str, StringConstraints(max_length=500, pattern=r"^[^\x00]*$")]
EventTypes = Annotated[list[EventType], Field(min_length=1, max_length=len(SUBSCRIBABLE))]


class EndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Url = Field(description="http(s) URL on a public address (checked after DNS resolution too)")
    description: Description = ""
    event_types: EventTypes = Field(default_factory=lambda: list(SUBSCRIBABLE),
                                    description="The notification types to receive (default: every subscribable one, "
                                                "GET /v1/webhooks/event-types)")


class EndpointUpdate(BaseModel):
    """Only the fields sent change. None of them may be null: a null is a 422 at its field, not
    "leave it unchanged" (the default of a field left out is not validated)."""

    model_config = ConfigDict(extra="forbid")

    url: Url = None  # type: ignore[assignment]
    description: Description = None  # type: ignore[assignment]
    event_types: EventTypes = None  # type: ignore[assignment]
    enabled: bool = Field(None, description="true re-enables a disabled endpoint; false disables it")  # type: ignore[assignment]


class EndpointPublic(BaseModel):
    id: str
    region_code: str = Field(description="The region of the key that registered it: what it is told about")
    url: str
    description: str
    event_types: list[str]
    enabled: bool
    disabled_at: datetime | None
    disabled_reason: str | None
    failing_since: datetime | None = Field(description="First failed attempt since the last success")
    previous_secret_expires_at: datetime | None = Field(
        description="Until then deliveries also carry a signature made with the previous secret")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, e: Endpoint) -> "EndpointPublic":
        return cls(id=e.id, region_code=e.region_code, url=e.url, description=e.description,
                   event_types=e.event_types.split(), enabled=e.disabled_at is None, disabled_at=e.disabled_at,
                   disabled_reason=e.disabled_reason, failing_since=e.failing_since,
                   previous_secret_expires_at=e.previous_secret_expires_at, created_at=e.created_at,
                   updated_at=e.updated_at)


class EndpointCreated(EndpointPublic):
    secret: str | None = Field(description="whsec_…: verify signatures with it. Shown only now (and on rotation); "
                                           "null in a replay (same Idempotency-Key), which does not keep it")


class EndpointsPage(BaseModel):
    items: list[EndpointPublic]
    next_cursor: str | None


class SecretRotated(BaseModel):
    endpoint_id: str
    secret: str | None = Field(description="The new whsec_ secret, shown only now; null in a replay (same "
                                           "Idempotency-Key), which does not keep it")
    previous_secret_expires_at: datetime


class MessageQueued(BaseModel):
    endpoint_id: str
    message_id: str = Field(description="The webhook-id the receiver will see")
    status: str


class AttemptPublic(BaseModel):
    id: int
    message_id: str
    at: datetime
    status_code: int | None
    latency_ms: int
    delivered: bool
    error: str | None

    @classmethod
    def of(cls, a: Attempt) -> "AttemptPublic":
        return cls(id=a.id, message_id=a.message_id, at=a.at, status_code=a.status_code, latency_ms=a.latency_ms,
                   delivered=a.delivered, error=a.error)


class AttemptsPage(BaseModel):
    items: list[AttemptPublic]
    next_cursor: str | None


class DeliveryPublic(BaseModel):
    message_id: str
    type: str
    status: Literal["pending", "delivered", "failed"]
    tries: int = Field(description="Attempts in the current round (a replay starts a new round)")
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, d: Delivery, type_: str) -> "DeliveryPublic":
        return cls(message_id=d.message_id, type=type_, status=d.status, tries=d.tries,
                   next_attempt_at=d.next_attempt_at if d.status == "pending" else None,
                   last_attempt_at=d.last_attempt_at, created_at=d.created_at)


class DeliveriesPage(BaseModel):
    items: list[DeliveryPublic]
    next_cursor: str | None


class ReplayFailed(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: IsoDateTime = Field(description="Replay failed deliveries of messages created at or after this time")


class Replayed(BaseModel):
    endpoint_id: str
    replayed: int


class NotificationType(BaseModel):
    type: str
    description: str
    subscribable: bool = Field(description="May be named in an endpoint's `event_types`; `webhook.ping` may not: "
                                           "it is sent only when asked for, whatever the endpoint's types")
