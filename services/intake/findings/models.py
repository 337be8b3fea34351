"""The ledger: one row per finding, plus its transitions."""

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Column, Date, Index, Integer, PrimaryKeyConstraint, String, Text
from sqlmodel import Field

from services.intake.base import IntakeModel
from services.kit.db import UTCDateTime


class FindingState(StrEnum):
    open = "open"
    reported = "reported"
    verified = "verified"
    disputed = "disputed"
    withdrawn = "withdrawn"


class LedgerEntry(IntakeModel, table=True):
    """A finding and where its rectification stands (整改台账).

    Its id is the partner's, unique within its county only: another county may use the same one.
    """

    __tablename__ = "finding"
    __table_args__ = (
        PrimaryKeyConstraint("finding_id", "region_code"),
        Index("ix_finding_region_code_state", "region_code", "state"),
        Index("ix_finding_prefecture_code_state", "prefecture_code", "state"),
        Index("ix_finding_deadline", "deadline"),
    )

    finding_id: str = Field(sa_column=Column(String(64), nullable=False))
    region_code: str = Field(sa_column=Column(String(6), nullable=False))
    prefecture_code: str = Field(sa_column=Column(String(6), nullable=False))
    inspection_id: str = Field(sa_column=Column(String(64), nullable=False))
    team_id: str = Field(sa_column=Column(String(64), nullable=False))
    mode: str = Field(sa_column=Column(String(32), nullable=False))
    category: str = Field(sa_column=Column(String(32), nullable=False))
    indicator: str = Field(sa_column=Column(String(32), nullable=False))
    severity: str = Field(sa_column=Column(String(16), nullable=False))
    description: str = Field(sa_column=Column(Text, nullable=False))
    village_id: str | None = Field(default=None, sa_column=Column(String(64)))
    household_id: str | None = Field(default=None, sa_column=Column(String(64)))
    responsible_unit: str = Field(sa_column=Column(String(200), nullable=False))
    responsible_person: str = Field(sa_column=Column(String(200), nullable=False))
    deadline: date = Field(sa_column=Column(Date, nullable=False))
    state: str = Field(sa_column=Column(String(16), nullable=False))
    found_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    state_changed_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    resolved_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime),
                                         description="When it was verified or withdrawn.")
    reports: int = Field(default=0, sa_column=Column(Integer, nullable=False, default=0))
    rejections: int = Field(default=0, sa_column=Column(Integer, nullable=False, default=0))
    dispute_decided: bool = Field(default=False)
    last_sequence: int = Field(sa_column=Column(BigInteger, nullable=False))


class LedgerTransition(IntakeModel, table=True):
    """Every change of a finding's state, with the event that caused it."""

    __tablename__ = "finding_transition"

    sequence: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    finding_id: str = Field(sa_column=Column(String(64), primary_key=True))
    region_code: str = Field(sa_column=Column(String(6), nullable=False))
    event_type: str = Field(sa_column=Column(String(64), nullable=False))
    from_state: str | None = Field(default=None, sa_column=Column(String(16)))
    to_state: str = Field(sa_column=Column(String(16), nullable=False))
    occurred_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


Index("ix_finding_transition_finding_id_region_code", LedgerTransition.__table__.c.finding_id,
      LedgerTransition.__table__.c.region_code)


class HouseholdRisk(IntakeModel, table=True):
    """防返贫 monitoring: whether a household is currently flagged (its id is unique within its county)."""

    __tablename__ = "household_risk"
    __table_args__ = (PrimaryKeyConstraint("household_id", "region_code"),)

    household_id: str = Field(sa_column=Column(String(64), nullable=False))
    region_code: str = Field(sa_column=Column(String(6), nullable=False))
    flagged: bool
    last_sequence: int = Field(sa_column=Column(BigInteger, nullable=False))
