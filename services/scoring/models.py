"""Scoring tables: the events it has applied, its offsets, and the scores it keeps."""

from datetime import datetime

from sqlalchemy import BigInteger, Column, Float, Index, Integer, LargeBinary, String, Text
from sqlmodel import Field

from services.kit.db import UTCDateTime
from services.scoring.base import ScoringModel


class AppliedBatch(ScoringModel, table=True):
    """The events applied, as published by intake, one row per write (a poll's, or a chunk of a
    recomputation): the worker rebuilds its engine from these, in `id` order.

    A row per event cost the worker more than its engine did (a B-tree entry under a random
    UUID and one under the sequence, per event); a poll's records are written as one value. The
    event ids live in the records: the engine, rebuilt from them, is what refuses a duplicate.
    """

    __tablename__ = "applied_batch"

    id: int | None = Field(default=None, sa_column=Column(BigInteger().with_variant(Integer, "sqlite"),
                                                          primary_key=True, autoincrement=True))
    events: int = Field(sa_column=Column(Integer, nullable=False))
    regions: str = Field(sa_column=Column(Text, nullable=False),
                         description="The county of each record, six characters each, in order: a worker "
                                     "rebuilding its own counties' engine skips the others unread.")
    records: bytes = Field(sa_column=Column(LargeBinary, nullable=False),
                           description="The records as published, one per line (compact JSON), in the order applied.")


class ConsumerOffset(ScoringModel, table=True):
    """The next offset to read per partition, written in the same transaction as the state."""

    __tablename__ = "consumer_offset"

    topic: str = Field(sa_column=Column(String(200), primary_key=True))
    partition: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    next_offset: int = Field(sa_column=Column(BigInteger, nullable=False))
    last_event_id: str | None = Field(default=None, sa_column=Column(String(36)),
                                      description="Checks on assignment that the log is still the one we read "
                                                  "(where no topic_id was stored).")
    topic_id: str | None = Field(default=None, sa_column=Column(String(36)),
                                 description="The Kafka topic id of the log the offset was read in: on assignment, "
                                             "an offset stored for another log (the broker lost it) is not used.")
    owner: str | None = Field(default=None, sa_column=Column(String(64)),
                              description="The worker (one token per assignment) that may write this partition's "
                                          "results; next_offset -1: claimed, nothing read yet.")


class WorkerClock(ScoringModel, table=True):
    """The as-of time scores were last computed at (the clock ticks forward only)."""

    __tablename__ = "worker_clock"

    id: int = Field(default=1, primary_key=True)
    as_of: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    policy_id: str = Field(sa_column=Column(String(64), nullable=False))
    generation: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"),
                            description="Moves on every recomputation: workers whose engines are older rebuild "
                                        "them before writing (their row is also the lock writers take).")
    writes: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default="0"),
                        description="Moves on every write (under this row's lock): a writer that finds it where its "
                                    "own last write left it keeps the score rows it holds (store.Stored).")


class County(ScoringModel, table=True):
    """Counties and their status before any event (from intake's regions), cached here."""

    __tablename__ = "county"

    code: str = Field(sa_column=Column(String(6), primary_key=True))
    prefecture_code: str = Field(sa_column=Column(String(6), nullable=False, index=True))
    status: str = Field(sa_column=Column(String(16), nullable=False))
    exit_year: int | None = Field(default=None, sa_column=Column(Integer, nullable=True),
                                  description="The baseline exit year of an exited county (None: unknown).")


class ScoreRow(ScoringModel, table=True):
    """The current score of a county or prefecture for an assessment year."""

    __tablename__ = "score"
    __table_args__ = (Index("ix_score_parent_code_year", "parent_code", "year"),)

    region_code: str = Field(sa_column=Column(String(6), primary_key=True))
    year: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    level: str = Field(sa_column=Column(String(16), nullable=False))
    parent_code: str = Field(sa_column=Column(String(6), nullable=False))
    league: str | None = Field(default=None, sa_column=Column(String(16)))
    total: float = Field(sa_column=Column(Float, nullable=False))
    grade: str = Field(sa_column=Column(String(32), nullable=False))
    gated: bool = False
    components: str = Field(sa_column=Column(Text, nullable=False), description="JSON: component → points")
    policy_id: str = Field(sa_column=Column(String(64), nullable=False))
    cause: str = Field(sa_column=Column(String(64), nullable=False))
    as_of: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


class ExplanationBatch(ScoringModel, table=True):
    """The lines of a county-year's explanation that one write added: what moved which component by
    how much, and why. Read in `id` order, line by line (`store.explanation_lines`).

    One row per county-year and write, not per line: a line a row was a third of the worker's
    write (eight columns and an index entry each, about 1.4 lines an event)."""

    __tablename__ = "explanation_batch"
    __table_args__ = (Index("ix_explanation_batch_region_code_year_id", "region_code", "year", "id"),)

    id: int | None = Field(default=None, sa_column=Column(BigInteger().with_variant(Integer, "sqlite"),
                                                          primary_key=True, autoincrement=True))
    region_code: str = Field(sa_column=Column(String(6), nullable=False))
    year: int = Field(sa_column=Column(Integer, nullable=False))
    policy_id: str = Field(sa_column=Column(String(64), nullable=False))
    lines: str = Field(sa_column=Column(Text, nullable=False),
                       description="JSON: [[component, points, rule, cause, at], ...], oldest first")


class TeamPoints(ScoringModel, table=True):
    """What a team earned in one county (积分制); a team's points are the sum over its counties.

    Per county, because each scoring worker owns the counties of its partitions.
    """

    __tablename__ = "team_points"

    team_id: str = Field(sa_column=Column(String(64), primary_key=True))
    region_code: str = Field(sa_column=Column(String(6), primary_key=True))
    findings_credited: int = Field(sa_column=Column(Integer, nullable=False))
    absences: str = Field(sa_column=Column(Text, nullable=False), description="JSON: inspector → unapproved absences")
    as_of: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


class StoredPolicy(ScoringModel, table=True):
    """A policy version added over the API; at most one policy is active (none: the shipped default)."""

    __tablename__ = "policy"

    id: str = Field(sa_column=Column(String(64), primary_key=True))
    body: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    active: bool = False


class ConfiguredPolicy(ScoringModel, table=True):
    """The policy the scoring workers' configuration names (KAOHE_SCORING_POLICY), as the worker
    started last declared it, with its rules. In force unless one was activated over the API.

    Workers started earlier follow it, so a rolling update that changes the setting moves every
    worker to the new policy once (old and new workers do not rescore back and forth), including a
    worker whose image lacks the policy's file (it reads the rules here). One row (id 1)."""

    __tablename__ = "configured_policy"

    id: int = Field(default=1, sa_column=Column(Integer, primary_key=True))
    policy_id: str = Field(sa_column=Column(String(64), nullable=False))
    body: str = Field(sa_column=Column(Text, nullable=False), description="the policy, JSON")
    configured_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


class RebuildRequest(ScoringModel, table=True):
    """A request to rebuild every score from intake's event store, carried out by the worker."""

    __tablename__ = "rebuild_request"

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True))
    requested_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    started_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    done_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    events: int | None = Field(default=None, description="Events replayed")
    error: str | None = Field(default=None, sa_column=Column(Text))
