"""Notify tables: endpoints, the notifications (messages) made for them, one delivery per message
and endpoint, every attempt, the findings whose deadlines we watch, and the consumed offsets."""

from datetime import date, datetime

from sqlalchemy import BigInteger, Boolean, Column, Date, Index, Integer, String, Text, UniqueConstraint
from sqlmodel import Field

from services.kit.db import UTCDateTime
from services.notify.base import NotifyModel

Id = BigInteger().with_variant(Integer, "sqlite")


class Endpoint(NotifyModel, table=True):
    """A receiver a prefecture registered; it belongs to the region of the key that created it."""

    __tablename__ = "endpoint"
    __table_args__ = (Index("ix_endpoint_region_code_id", "region_code", "id"),)

    id: str = Field(sa_column=Column(String(40), primary_key=True))
    region_code: str = Field(sa_column=Column(String(6), nullable=False))
    url: str = Field(sa_column=Column(String(2048), nullable=False))
    description: str = Field(sa_column=Column(String(500), nullable=False, default=""))
    event_types: str = Field(sa_column=Column(Text, nullable=False), description="space-separated types")
    secret: str = Field(sa_column=Column(String(100), nullable=False))
    previous_secret: str | None = Field(default=None, sa_column=Column(String(100)))
    previous_secret_expires_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    created_by: str = Field(sa_column=Column(String(64), nullable=False), description="the API key's id")
    created_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    failing_since: datetime | None = Field(default=None, sa_column=Column(UTCDateTime),
                                           description="first failed attempt since the last success")
    disabled_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    disabled_reason: str | None = Field(default=None, sa_column=Column(String(500)))


class Message(NotifyModel, table=True):
    """One notification, its body fixed at creation (the same bytes on every attempt)."""

    __tablename__ = "message"

    id: str = Field(sa_column=Column(String(40), primary_key=True), description="the webhook-id")
    type: str = Field(sa_column=Column(String(64), nullable=False))
    region_code: str = Field(sa_column=Column(String(6), nullable=False))
    dedupe_key: str | None = Field(default=None, sa_column=Column(String(300), unique=True),
                                   description="type + source ids: a redelivered source makes no second message "
                                               "(a finding's: type:county/finding_id; type:finding_id before "
                                               "finding ids were per county, still recognised)")
    body: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


class Delivery(NotifyModel, table=True):
    """A message on its way to one endpoint: pending (with its next attempt), delivered or failed."""

    __tablename__ = "delivery"
    __table_args__ = (UniqueConstraint("message_id", "endpoint_id"),
                      Index("ix_delivery_due", "status", "next_attempt_at"),
                      Index("ix_delivery_endpoint_id_id", "endpoint_id", "id"))

    id: int | None = Field(default=None, sa_column=Column(Id, primary_key=True, autoincrement=True))
    message_id: str = Field(sa_column=Column(String(40), nullable=False))
    endpoint_id: str = Field(sa_column=Column(String(40), nullable=False))
    status: str = Field(sa_column=Column(String(16), nullable=False), description="pending, delivered, failed")
    tries: int = Field(sa_column=Column(Integer, nullable=False, default=0),
                       description="attempts in this round (a replay starts a new round)")
    next_attempt_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    created_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    last_attempt_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))


class Attempt(NotifyModel, table=True):
    """One HTTP attempt: the delivery log."""

    __tablename__ = "attempt"
    __table_args__ = (Index("ix_attempt_endpoint_id_id", "endpoint_id", "id"),)

    id: int | None = Field(default=None, sa_column=Column(Id, primary_key=True, autoincrement=True))
    delivery_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    endpoint_id: str = Field(sa_column=Column(String(40), nullable=False))
    message_id: str = Field(sa_column=Column(String(40), nullable=False))
    at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    status_code: int | None = None
    latency_ms: int = Field(sa_column=Column(Integer, nullable=False))
    error: str | None = Field(default=None, sa_column=Column(String(500)))
    delivered: bool = Field(sa_column=Column(Boolean, nullable=False))


class TrackedFinding(NotifyModel, table=True):
    """A finding's deadline and state, kept from intake's events: scoring's score messages name
    no single finding when a day passes, so notify watches the deadlines itself.

    Keyed by county and finding id: partners choose finding ids, unique within a county only."""

    __tablename__ = "tracked_finding"
    __table_args__ = (Index("ix_tracked_finding_watch", "overdue_notified", "deadline"),)

    region_code: str = Field(sa_column=Column(String(6), primary_key=True), description="the county")
    finding_id: str = Field(sa_column=Column(String(64), primary_key=True))
    inspection_id: str = Field(sa_column=Column(String(64), nullable=False))
    severity: str = Field(sa_column=Column(String(16), nullable=False))
    deadline: date = Field(sa_column=Column(Date, nullable=False))
    state: str = Field(sa_column=Column(String(16), nullable=False))
    responsible_unit: str = Field(sa_column=Column(String(200), nullable=False))
    overdue_notified: bool = Field(sa_column=Column(Boolean, nullable=False, default=False))


class ConsumerOffset(NotifyModel, table=True):
    """The next offset to read per partition, written in the same transaction as the messages."""

    __tablename__ = "consumer_offset"

    topic: str = Field(sa_column=Column(String(200), primary_key=True))
    partition: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    next_offset: int = Field(sa_column=Column(BigInteger, nullable=False))
    topic_id: str | None = Field(default=None, sa_column=Column(String(36)),
                                 description="The Kafka topic id of the log the offset was read in: on assignment, "
                                             "an offset stored for another log (the broker lost it) is not used.")
