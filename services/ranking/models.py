"""Ranking tables: the latest score of every region, the standings kept ranked, and their history."""

from datetime import datetime

from sqlalchemy import BigInteger, Column, Float, Index, Integer, String, Text
from sqlmodel import Field

from services.kit.db import UTCDateTime
from services.ranking.base import RankingModel


class Region(RankingModel, table=True):
    """Provinces, prefectures and counties with their names (cached from intake's regions)."""

    __tablename__ = "region"

    code: str = Field(sa_column=Column(String(6), primary_key=True))
    name: str = Field(sa_column=Column(String(64), nullable=False))
    level: str = Field(sa_column=Column(String(16), nullable=False))
    parent_code: str | None = Field(default=None, sa_column=Column(String(6)))


class CurrentScore(RankingModel, table=True):
    """The latest score message of a region and year (older and resent copies are dropped)."""

    __tablename__ = "current_score"

    region_code: str = Field(sa_column=Column(String(6), primary_key=True))
    year: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    level: str = Field(sa_column=Column(String(16), nullable=False))
    league: str = Field(sa_column=Column(String(16), nullable=False), description="'all' for prefectures")
    total: float = Field(sa_column=Column(Float, nullable=False))
    grade: str = Field(sa_column=Column(String(32), nullable=False))
    components: str = Field(sa_column=Column(Text, nullable=False))
    message_id: int = Field(sa_column=Column(BigInteger, nullable=False), description="scoring's outbox_id")
    as_of: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


class Standing(RankingModel, table=True):
    """Where a region stands in one scope (the rank table the API reads: no window function)."""

    __tablename__ = "standing"
    __table_args__ = (Index("ix_standing_scope_rank", "scope", "level", "league", "year", "rank", "region_code"),
                      Index("ix_standing_region_code_year", "region_code", "year"))

    scope: str = Field(sa_column=Column(String(6), primary_key=True), description="prefecture or province code")
    level: str = Field(sa_column=Column(String(16), primary_key=True))
    league: str = Field(sa_column=Column(String(16), primary_key=True))
    year: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    region_code: str = Field(sa_column=Column(String(6), primary_key=True))
    rank: int
    total: float = Field(sa_column=Column(Float, nullable=False))
    grade: str = Field(sa_column=Column(String(32), nullable=False))
    previous_rank: int | None = None
    previous_total: float | None = Field(default=None, sa_column=Column(Float))
    movement: int | None = Field(default=None, description="previous rank − rank (up is positive); None if new")
    changed_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


class WriteSequence(RankingModel, table=True):
    """One row: how many writes the ranking workers have committed. Every write moves it under its
    row lock (one writer at a time), so a worker can tell whether the standings it keeps from its
    last write are still the latest (store.Cache)."""

    __tablename__ = "write_sequence"

    id: int = Field(default=1, primary_key=True)
    sequence: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default="0"))


class StandingHistory(RankingModel, table=True):
    """Every change of a standing; rank None when the region left the scope (a league move)."""

    __tablename__ = "standing_history"
    __table_args__ = (Index("ix_standing_history_scope", "scope", "level", "league", "year", "at"),
                      Index("ix_standing_history_region_code_year", "region_code", "year", "id"))

    id: int | None = Field(default=None, sa_column=Column(BigInteger().with_variant(Integer, "sqlite"),
                                                          primary_key=True, autoincrement=True))
    scope: str = Field(sa_column=Column(String(6), nullable=False))
    level: str = Field(sa_column=Column(String(16), nullable=False))
    league: str = Field(sa_column=Column(String(16), nullable=False))
    year: int = Field(sa_column=Column(Integer, nullable=False))
    region_code: str = Field(sa_column=Column(String(6), nullable=False))
    rank: int | None = None
    total: float | None = Field(default=None, sa_column=Column(Float))
    grade: str | None = Field(default=None, sa_column=Column(String(32)))
    previous_rank: int | None = None
    previous_total: float | None = Field(default=None, sa_column=Column(Float))
    at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


class ConsumerOffset(RankingModel, table=True):
    """The next offset to read per partition, written in the same transaction as the standings."""

    __tablename__ = "consumer_offset"

    topic: str = Field(sa_column=Column(String(200), primary_key=True))
    partition: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    next_offset: int = Field(sa_column=Column(BigInteger, nullable=False))
    topic_id: str | None = Field(default=None, sa_column=Column(String(36)),
                                 description="The Kafka topic id of the log the offset was read in: on assignment, "
                                             "an offset stored for another log (the broker lost it) is not used.")
