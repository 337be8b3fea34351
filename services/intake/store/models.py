"""Event store tables. Rows of `event` are never updated or deleted."""

from datetime import datetime
from uuid import UUID

from sqlalchemy import BigInteger, Column, Index, Integer, PrimaryKeyConstraint, String, Text, Uuid
from sqlmodel import Field

from services.intake.base import IntakeModel
from services.kit.db import UTCDateTime

GENESIS_HASH = "0" * 64


class StoredEvent(IntakeModel, table=True):
    """One accepted event, in store order, chained to the one before it."""

    __tablename__ = "event"
    __table_args__ = (
        Index("ix_event_region_code_sequence", "region_code", "sequence"),
        Index("ix_event_prefecture_code_sequence", "prefecture_code", "sequence"),
        Index("ix_event_type_sequence", "type", "sequence"),
        Index("ix_event_recorded_at", "recorded_at"),
    )

    sequence: int = Field(sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                           autoincrement=False))
    event_id: UUID = Field(sa_column=Column(Uuid, nullable=False, unique=True))
    type: str = Field(sa_column=Column(String(64), nullable=False))
    schema_version: int = Field(sa_column=Column(Integer, nullable=False))
    occurred_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    recorded_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    region_code: str = Field(sa_column=Column(String(6), nullable=False))
    prefecture_code: str = Field(sa_column=Column(String(6), nullable=False))
    source: str = Field(sa_column=Column(String(100), nullable=False))
    body: str = Field(sa_column=Column(Text, nullable=False),
                      description="The envelope as canonical JSON (sorted keys): what the hash covers.")
    content_hash: str = Field(sa_column=Column(String(64), nullable=False),
                              description="sha256 of the content, for idempotency (offset-insensitive).")
    chain_hash: str = Field(sa_column=Column(String(64), nullable=False),
                            description="sha256(previous chain_hash, sequence, recorded_at, body).")
    request_id: str | None = Field(default=None, sa_column=Column(String(128), nullable=True),
                                   description="The request that sent it (X-Request-ID); not hashed. "
                                               "Its message carries it (services.intake.relay).")


class ChainHead(IntakeModel, table=True):
    """The last sequence and hash. Its single row is the lock that serialises appends."""

    __tablename__ = "chain_head"

    id: int = Field(default=1, primary_key=True)
    sequence: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    chain_hash: str = Field(default=GENESIS_HASH, sa_column=Column(String(64), nullable=False))
    recorded_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))


class Published(IntakeModel, table=True):
    """How far the relay has published the store to Kafka: intake's outbox is the event table itself.

    Its single row holds the last sequence the broker acknowledged (or an earlier one: what is
    past it is published again after a restart, and consumers drop a copy by event id). Appends
    hold the chain head's lock until they commit, so the store's committed sequences are always
    gap-free from 1: whatever a reader sees past this number is the next events, in order.
    """

    __tablename__ = "published"

    id: int = Field(default=1, primary_key=True)
    sequence: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))


class NaturalKey(IntakeModel, table=True):
    """Client ids that must be unique across a county's events (an inspection_id, a check_id)."""

    __tablename__ = "natural_key"
    __table_args__ = (PrimaryKeyConstraint("kind", "key", "region_code"),)

    kind: str = Field(sa_column=Column(String(32), nullable=False))
    key: str = Field(sa_column=Column(String(64), nullable=False))
    region_code: str = Field(sa_column=Column(String(6), nullable=False))
    sequence: int = Field(sa_column=Column(BigInteger, nullable=False))
