"""Access's own tables: API keys and idempotency records, shared by every service's API.

They live in their own database (or PostgreSQL schema) `access`, migrated like a service's.
"""

from datetime import datetime

from sqlalchemy import Column, Index, Integer, LargeBinary, String, Text
from sqlmodel import Field

from services.kit.db import UTCDateTime, service_base

AccessModel = service_base("access")
metadata = AccessModel.metadata


class ApiKey(AccessModel, table=True):
    """A partner's key. The secret is never stored: only its SHA-256 (it has 256 random bits)."""

    __tablename__ = "api_key"

    id: str = Field(sa_column=Column(String(32), primary_key=True))
    name: str = Field(sa_column=Column(String(200), nullable=False))
    secret_hash: str = Field(sa_column=Column(String(64), nullable=False))
    scopes: str = Field(sa_column=Column(String(400), nullable=False))  # space-separated
    region: str = Field(sa_column=Column(String(6), nullable=False, index=True))
    rate_limit_per_min: int | None = Field(default=None, sa_column=Column(Integer))
    created_by: str | None = Field(default=None, sa_column=Column(String(32)))
    created_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    expires_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    revoked_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))


class IdempotencyRecord(AccessModel, table=True):
    """The outcome of a POST sent with an Idempotency-Key, per API key; kept at least 24 h."""

    __tablename__ = "idempotency_record"
    __table_args__ = (Index("ix_idempotency_record_created_at", "created_at"),)

    key_id: str = Field(sa_column=Column(String(32), primary_key=True))
    idempotency_key: str = Field(sa_column=Column(String(255), primary_key=True))
    fingerprint: str = Field(sa_column=Column(String(64), nullable=False))  # method, path, query, body
    created_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    locked_until: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))  # set while running
    status: int | None = Field(default=None, sa_column=Column(Integer))
    headers: str | None = Field(default=None, sa_column=Column(Text))  # JSON list of [name, value]
    body: bytes | None = Field(default=None, sa_column=Column(LargeBinary))


__all__ = ["ApiKey", "IdempotencyRecord", "metadata"]
